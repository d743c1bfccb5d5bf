"""Re-captioning with InternVL2 (short and detailed) into VL3-Syn7M-short / -detailed.

Not built yet: see the re-captioning issue. It will read curated shard sets through
``manifests`` and may use the runner in ``curation``.
"""
