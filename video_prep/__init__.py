"""Video preparation: 1-fps frames, caption-bounded clips, streaming and grounding samples.

Not built yet: see the video preparation issue. It will share ``curation``'s runner and
``manifests``' ledger and shard writer.
"""
