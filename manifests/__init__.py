"""The data contract every part of vl3data reads and writes (DESIGN §4).

``schema`` (the in-flight row), ``marks`` (marking rows dropped with a reason), ``ledger`` (one
row per input), ``shards`` (WebDataset writer and reader), ``dataset`` (``dataset.json``),
``report`` (``report.html``: ``report_data`` reads, ``report_plots`` draws, ``report`` renders),
``thumbs`` (thumbnails), ``configs`` (validated YAML configs), ``atomic`` (temp + rename).
This package imports no other package of the project.
"""
