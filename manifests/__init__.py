"""The data contract every part of vl3data reads and writes (DESIGN §4).

``schema`` (the in-flight row), ``marks`` (marking rows dropped with a reason), ``ledger`` (one
row per input), ``shards`` (WebDataset writer and reader), ``dataset`` (``dataset.json``),
``configs`` (validated YAML configs), ``atomic`` (temp + rename), ``chat`` (conversations).
This package imports no other package of the project; the reports people read are drawn above
it, in the presentation layer ``reports`` (DESIGN §3).
"""
