"""The curation pipeline as an explicit list of stages, per input kind."""

from __future__ import annotations

from curation.config import CurateConfig
from curation.runner import Stage
from curation.stages.decode import Decode, Probe
from curation.stages.shape import ShapeFilter


def build_stages(cfg: CurateConfig) -> list[Stage]:
    f, d = cfg.filters, cfg.decode
    shape = dict(
        min_aspect=f.min_aspect,
        max_aspect=f.max_aspect,
        min_side=f.min_side,
        thumbs_per_reason=d.thumbs_per_reason,
    )
    stages: list[Stage] = []
    if cfg.input.kind == "url_parquet":
        from curation.download import Download

        # declared sizes first: an extreme shape is never downloaded
        stages += [ShapeFilter(name="prefilter", **shape), Download(cfg.download)]
    stages += [
        Probe(max_pixels=f.max_pixels),
        ShapeFilter(name="shape", **shape),
        Decode(
            verify=d.verify,
            draft=d.draft,
            verify_size=d.verify_size,
            store_max_side=d.store_max_side,
            jpeg_quality=d.jpeg_quality,
        ),
    ]
    return stages


def thresholds(cfg: CurateConfig) -> dict[str, list[float]]:
    """Score column -> the threshold values the report draws on its histogram."""
    f = cfg.filters
    return {"aspect_ratio": [f.min_aspect, f.max_aspect], "min_side": [float(f.min_side)]}
