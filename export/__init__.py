"""``vl3data export``: a shard set (or a materialised mixture) in the layouts the field's
trainers read: VideoLLaMA3's ``annotations_{kind}.jsonl`` + media folder and LLaVA's JSON
(``export.run.export_shard_set``; docs/EXPORT.md).

It reads shard sets through the data contract only (``manifests``), one tar member at a time,
and imports no job: a peer of the jobs at layer 2."""
