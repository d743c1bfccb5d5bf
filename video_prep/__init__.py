"""Video preparation: 1-fps frames, caption-bounded clips (``job``), scene-cut clips of raw
footage with model-written captions (``raw_job``), and caption, streaming and grounding samples.
"""
