"""vl3data: VideoLLaMA3-style vision-language training data, from raw pools to trainer shards."""

__version__ = "0.1.0"
