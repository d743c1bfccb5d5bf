"""Config of the model-scored stages (VL3-Syn7M filtering): CLIP, aesthetic, BLIP-2 captions,
caption–image similarity, k-means balancing. Every section is off by default, so a plain
curation job needs no model at all."""

from __future__ import annotations

from dataclasses import dataclass, field

from manifests.configs import require

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
STRATEGIES = ("closest", "random", "spread")


def _fraction(value: float | None, name: str) -> None:
    require(value is None or 0 < value <= 1, name, f"{value} is not in (0, 1]", "e.g. 0.6")


@dataclass
class ClipConfig:
    """The CLIP image embedding, computed once per image, reused by every later stage."""

    enabled: bool = False
    backend: str = "open_clip"  # open_clip | transformers
    model: str = "ViT-L-14"  # open_clip name or local-dir:/path; transformers: hub id or dir
    pretrained: str | None = "openai"  # open_clip tag or checkpoint file
    device: str = "auto"  # cuda when there is one
    precision: str = "auto"  # fp16 on GPU, fp32 on CPU
    draft: bool = True  # JPEG DCT-scaled decoding straight to the model's input size
    batch_size: int = 64
    concurrency: int = 1  # actors
    num_gpus: float = 0  # per actor; 1 on a GPU cluster
    embeddings_dtype: str = "float16"  # stored beside the ledger: float16 | float32

    def __post_init__(self) -> None:
        require(
            self.backend in ("open_clip", "transformers"),
            "clip.backend",
            f"{self.backend!r} is not open_clip or transformers",
        )
        require(self.precision in PRECISIONS, "clip.precision", f"not one of {PRECISIONS}")
        require(self.batch_size >= 1, "clip.batch_size", "must be at least 1")
        require(self.concurrency >= 1, "clip.concurrency", "must be at least 1")
        require(self.num_gpus >= 0, "clip.num_gpus", "must be 0 or more")
        require(
            self.embeddings_dtype in ("float16", "float32"),
            "clip.embeddings_dtype",
            "must be float16 or float32",
        )


@dataclass
class AestheticConfig:
    """LAION aesthetic predictor on the CLIP embedding; drop by value or keep a top fraction."""

    enabled: bool = False
    weights: str = "sac+logos+ava1-l14-linearMSE"  # known name (fetched), path or URL
    min_score: float | None = 4.5
    keep_top_fraction: float | None = None  # e.g. 0.6: a global step after scoring
    batch_size: int = 1024

    def __post_init__(self) -> None:
        _fraction(self.keep_top_fraction, "aesthetic.keep_top_fraction")
        require(
            self.min_score is None or self.keep_top_fraction is None,
            "aesthetic.keep_top_fraction",
            "set either min_score or keep_top_fraction",
            "set the other to null",
        )


@dataclass
class CaptionConfig:
    """BLIP-2 coarse captions (transformers' Blip2ForConditionalGeneration), greedy."""

    enabled: bool = False
    model: str = "Salesforce/blip2-opt-2.7b"  # hub id or local directory
    prompt: str | None = None
    max_new_tokens: int = 30
    device: str = "auto"
    precision: str = "auto"
    batch_size: int = 16
    concurrency: int = 1
    num_gpus: float = 0

    def __post_init__(self) -> None:
        require(self.max_new_tokens >= 1, "caption.max_new_tokens", "must be at least 1")
        require(self.precision in PRECISIONS, "caption.precision", f"not one of {PRECISIONS}")
        require(self.batch_size >= 1, "caption.batch_size", "must be at least 1")


@dataclass
class SimilarityConfig:
    """CLIP similarity of each image to its coarse caption; drop by value or top fraction."""

    enabled: bool = False
    min_sim: float | None = None
    keep_top_fraction: float | None = None
    alt_text: bool = False  # also score the original alt-text (clip_sim_alt), not filtered
    batch_size: int = 256

    def __post_init__(self) -> None:
        _fraction(self.keep_top_fraction, "similarity.keep_top_fraction")
        require(
            self.min_sim is None or self.keep_top_fraction is None,
            "similarity.keep_top_fraction",
            "set either min_sim or keep_top_fraction",
            "set the other to null",
        )


@dataclass
class ClusterConfig:
    """k-means on the surviving embeddings, then a fixed number per cluster."""

    enabled: bool = False
    k: int = 100
    per_cluster: int = 100  # clusters smaller than this are kept whole
    strategy: str = "closest"  # closest | random | spread
    spherical: bool = True
    niter: int = 20
    seed: int = 0
    max_train_points: int | None = 1_000_000  # centroids from a sample that fits one node
    levels: list[int] = field(default_factory=list)  # hierarchical, e.g. [10000, 1000, 100]
    target_size: int | None = None  # with levels: how many images to keep in all

    def __post_init__(self) -> None:
        require(self.k >= 1, "cluster.k", "must be at least 1")
        require(self.per_cluster >= 1, "cluster.per_cluster", "must be at least 1")
        require(self.strategy in STRATEGIES, "cluster.strategy", f"not one of {STRATEGIES}")
        require(self.niter >= 1, "cluster.niter", "must be at least 1")
        require(all(k >= 1 for k in self.levels), "cluster.levels", "every level must be >= 1")
        require(
            not self.levels or (self.target_size or 0) >= 1,
            "cluster.target_size",
            "hierarchical clustering (levels) needs a target_size",
        )
