"""The curation pipeline as explicit lists of stages, one list per pass.

Pass ``score``: the first stage (shape, probe, decode), then, when enabled, the CLIP embedding
(computed once) and the aesthetic score with its value threshold. Pass ``caption`` (when
enabled): BLIP-2 coarse captions and their CLIP similarity. Between and after the passes run
the global steps (top-fraction thresholds, k-means balancing) in ``curation.curate``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from curation.config import CurateConfig
from curation.stages.decode import Decode, Probe
from curation.stages.shape import ShapeFilter
from curation.stages.thresholds import MinScore
from engine.runner import Stage


@dataclass
class Pass:
    name: str
    stages: list[Stage]


def first_stage(cfg: CurateConfig) -> list[Stage]:
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


def _fields(section, drop: tuple[str, ...] = ("enabled",)) -> dict:
    """A config section's fields as stage keyword arguments: sections mirror their stages."""
    return {k: v for k, v in dataclasses.asdict(section).items() if k not in drop}


def _clip_kw(cfg: CurateConfig) -> dict:
    """The CLIP model's identity and placement, shared by the embedding and similarity stages."""
    return _fields(cfg.clip, ("enabled", "draft", "batch_size", "embeddings_dtype"))


def clip_embed_kw(cfg: CurateConfig) -> dict:
    """The CLIP embedding stage's arguments (also what embeds the evaluation images)."""
    return _fields(cfg.clip, ("enabled", "embeddings_dtype"))


def _min_score(cfg: CurateConfig, column: str, value: float) -> MinScore:
    """A value threshold on a score; the stage has the score's name, as the ledger reports."""
    return MinScore(
        column=column, min_value=value, name=column, thumbs_per_reason=cfg.decode.thumbs_per_reason
    )


def build_passes(cfg: CurateConfig) -> list[Pass]:
    score = first_stage(cfg)
    if cfg.dedup.hashes or cfg.decontam.hashes:  # for the pool-wide steps after this pass
        from curation.stages.dedup_hashes import ImageHashes

        score.append(ImageHashes())
    if cfg.clip.enabled:
        from curation.stages.clip_embed import ClipEmbed

        score.append(ClipEmbed(**clip_embed_kw(cfg)))
    if cfg.aesthetic.enabled:
        from curation.stages.aesthetic import AestheticScore

        a = cfg.aesthetic
        score.append(
            AestheticScore(
                weights=a.weights,
                batch_size=a.batch_size,
                device=cfg.clip.device,
                num_gpus=cfg.clip.num_gpus,
                allow_addresses=tuple(cfg.download.allow_addresses),
            )
        )
        if a.min_score is not None:
            score.append(_min_score(cfg, "aesthetic", a.min_score))
    passes = [Pass("score", score)]
    if cfg.caption.enabled:
        from curation.stages.blip2_caption import Blip2Caption

        caption: list[Stage] = [Blip2Caption(**_fields(cfg.caption))]
        if cfg.similarity.enabled:
            from curation.stages.similarity import ClipTextSim

            s = cfg.similarity
            caption.append(
                ClipTextSim(**_clip_kw(cfg), alt_text=s.alt_text, batch_size=s.batch_size)
            )
            if s.min_sim is not None:
                caption.append(_min_score(cfg, "clip_sim", s.min_sim))
        passes.append(Pass("caption", caption))
    return passes


def stage_names(cfg: CurateConfig) -> list[str]:
    """Every stage in pipeline order, global steps included (the report's funnel order)."""
    names = ["read"]
    for p in build_passes(cfg):
        names += [getattr(s, "name", "?") for s in p.stages]
        if p.name == "score":
            names += [f"dedup_{k}" for k in ("exact", "phash") if getattr(cfg.dedup, k)]
            names += ["decontam"] if cfg.decontam.enabled else []
        if p.name == "score" and cfg.aesthetic.keep_top_fraction:
            names.append("aesthetic")
    if cfg.similarity.keep_top_fraction:
        names.append("clip_sim")
    if cfg.cluster.enabled:
        names.append("cluster")
    if cfg.dedup.semantic:
        names.append("dedup_semantic")
    return list(dict.fromkeys(names))


def thresholds(cfg: CurateConfig) -> dict[str, list[float]]:
    """Score column -> the threshold values the report draws on its histogram."""
    f = cfg.filters
    out = {"aspect_ratio": [f.min_aspect, f.max_aspect], "min_side": [float(f.min_side)]}
    if cfg.aesthetic.enabled and cfg.aesthetic.min_score is not None:
        out["aesthetic"] = [cfg.aesthetic.min_score]
    if cfg.similarity.enabled and cfg.similarity.min_sim is not None:
        out["clip_sim"] = [cfg.similarity.min_sim]
    return out
