"""Curation stages: small callables over a ``pyarrow.Table`` batch, listed in the pipeline."""
