"""``vl3data import``: the field's public datasets (LLaVA / ShareGPT4V, VideoLLaMA3's own
annotations, text chat, the hub's Parquet tables) as shard sets of ours (``ingest.job``)."""
