"""The trainer's config: one YAML (``configs/train_compact.yaml``), validated on load.

``model.preset`` is the one size knob (:mod:`model.presets`); ``stage1`` ... ``stage4`` name each
stage's mixture recipe and length. Learning rates and DiffFP default to the paper's
(:data:`model.stages.PAPER`): a field left out (``null``) takes the paper's value for its stage,
a learning rate of 0 freezes its group. ``lr_scale`` multiplies a stage's rates: 1 is the paper;
the tests raise it so a tiny model visibly learns in a few steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from manifests.configs import ConfigError, require
from model.precision import PRECISIONS
from model.presets import PRESETS
from model.stages import (
    DIFF_THRESHOLD,
    DIFF_THRESHOLDS,
    IMAGE_MERGE_SIZES,
    PAPER,
    STAGES,
    STREAM_FRAMES,
    STREAM_LABELS,
    WARMUP_RATIO,
)


@dataclass
class ModelConfig:
    """What to train: a preset built here, or a local checkpoint."""

    preset: str = "small"  # tiny | small | 2b: the model's shape and data budget
    init: str = ""  # a local VideoLLaMA3 checkpoint directory (from_pretrained) to start from
    # or start stage 1 from two parts, as the paper does (model/init_parts.py): a local Qwen2 /
    # Qwen2.5 causal LM and a local SigLIP; the projector is new, the tokenizer the LLM's
    init_llm: str = ""
    init_vision: str = ""
    tokenizer: str = ""  # a local tokenizer directory; empty: train a BPE on the recipes' text
    vocab_size: int = 0  # BPE entries when training one; 0: the preset's
    tokenizer_records: int = 50_000  # records per recipe read to train the BPE
    attn_implementation: str = "sdpa"  # sdpa | eager | flash_attention_2

    def __post_init__(self) -> None:
        require(
            self.preset in PRESETS,
            "preset",
            f"{self.preset!r} is not a preset",
            f"one of {', '.join(PRESETS)}",
        )
        require(self.vocab_size >= 0, "vocab_size", "must be 0 (the preset's) or more")
        require(self.tokenizer_records >= 1, "tokenizer_records", "must be at least 1")
        require(
            self.attn_implementation in ("sdpa", "eager", "flash_attention_2"),
            "attn_implementation",
            f"{self.attn_implementation!r} is not sdpa, eager or flash_attention_2",
        )


@dataclass
class DataConfig:
    """The collator's budgets (0: the preset's) and DiffFP's threshold."""

    max_length: int = 0  # tokens per sample (the paper: 16384)
    max_vision_tokens: int = 0  # vision tokens per sample (the paper: 10240)
    tokens_per_batch: int = 0  # padded tokens per micro-batch
    # DiffFP, in stages with token_compression: videollama3 (the code's rule, 0.05 grey levels),
    # rlt (RLT's, 5.8 grey levels) or a mean |Δ| of normalised pixels (0.1: 12.75 grey levels)
    diff_threshold: float | str = DIFF_THRESHOLD
    # streaming turns: videollama3 (VideoLLaMA3's labels: the answers, and in each stream turn
    # the token after the frame and <|stream_end|>) | answers (the answers only)
    stream_labels: str = "videollama3"
    # a streaming sample's frames: video (one clip, as VideoLLaMA3's train.py: merged 2x2 in
    # every stage, DiffFP across frames where the stage has it) | image (separate images at the
    # stage's image merge, never pruned)
    stream_frames: str = "video"
    # held out of training by a hash of the sample key (0: none) and evaluated after each stage:
    # loss per task, and grounding mIoU (model/evaluate.py)
    holdout_fraction: float = 0.0
    eval_limit: int = 8  # held-out samples per source evaluated
    eval_grounding: int = 4  # grounding questions answered by generation (0: none)

    def __post_init__(self) -> None:
        for name in ("max_length", "max_vision_tokens", "tokens_per_batch"):
            require(getattr(self, name) >= 0, name, "must be 0 (the preset's) or more")
        self.diff_threshold = _threshold(self.diff_threshold)
        require(
            self.stream_labels in STREAM_LABELS,
            "stream_labels",
            f"{self.stream_labels!r} is not a labelling",
            f"one of {', '.join(STREAM_LABELS)}",
        )
        require(
            self.stream_frames in STREAM_FRAMES,
            "stream_frames",
            f"{self.stream_frames!r} is not a kind of frames",
            f"one of {', '.join(STREAM_FRAMES)}",
        )
        require(0 <= self.holdout_fraction < 1, "holdout_fraction", "must be in [0, 1)")
        require(self.eval_limit >= 1, "eval_limit", "must be at least 1")
        require(self.eval_grounding >= 0, "eval_grounding", "must be 0 or more")


def _threshold(value: float | str) -> float | str:
    """``data.diff_threshold``: a name of :data:`model.stages.DIFF_THRESHOLDS`, or a number
    (YAML and ``--set`` may give it as a string) of 0 or more."""
    choices = f"one of {', '.join(DIFF_THRESHOLDS)}, or a number >= 0 (e.g. 0.1)"
    if isinstance(value, str):
        if value.strip().lower() in DIFF_THRESHOLDS:
            return value.strip().lower()
        try:
            value = float(value)
        except ValueError:
            require(False, "diff_threshold", f"{value!r} is not a threshold", choices)
    require(
        not isinstance(value, bool) and isinstance(value, int | float) and 0 <= value < math.inf,
        "diff_threshold",
        f"{value!r} is not a threshold",
        choices,
    )
    return float(value)


@dataclass
class LrConfig:
    """Learning rate per parameter group; null: the paper's for the stage; 0: frozen.

    Typed to take strings too: YAML reads ``1e-5`` (no dot) as a string, and so does ``--set``;
    they are parsed here."""

    vision: float | str | None = None
    projector: float | str | None = None
    llm: float | str | None = None

    def __post_init__(self) -> None:
        for name in ("vision", "projector", "llm"):
            value = getattr(self, name)
            if isinstance(value, str):
                try:
                    value = float(value)
                except ValueError:
                    value = None
                require(value is not None, name, f"{getattr(self, name)!r} is not a number")
                setattr(self, name, value)
            require(value is None or value >= 0, name, f"must be 0 (frozen) or more, not {value}")

    def as_dict(self) -> dict[str, float]:
        return {"vision": self.vision, "projector": self.projector, "llm": self.llm}


@dataclass
class StageConfig:
    """One stage: its mixture, its length and its learning rates."""

    recipe: str = ""  # a mixture recipe (mixtures/recipes/*.yaml)
    steps: int = 100  # optimizer steps
    lr: LrConfig = field(default_factory=LrConfig)
    lr_scale: float = 1.0  # multiplies every rate of the stage; 1 is the paper (tests raise it)
    warmup_ratio: float = WARMUP_RATIO  # linear warm-up over this share of the steps, then cosine
    token_compression: bool | None = None  # DiffFP; null: the paper's (on in stages 3 and 4)
    # image tokens (images, streaming frames) merged NxN; null: the paper's (2 in stage 4, else 1)
    image_merge_size: int | None = None

    def __post_init__(self) -> None:
        require(self.steps >= 1, "steps", "must be at least 1")
        require(
            self.image_merge_size is None
            or (type(self.image_merge_size) is int and self.image_merge_size in IMAGE_MERGE_SIZES),
            "image_merge_size",
            f"{self.image_merge_size!r} is not a merge size",
            f"null (the paper's: 2 in stage 4, else 1) or one of {IMAGE_MERGE_SIZES}",
        )
        require(self.lr_scale > 0, "lr_scale", "must be above 0")
        require(0 <= self.warmup_ratio < 1, "warmup_ratio", "must be in [0, 1)")

    def lrs(self) -> dict[str, float]:
        """The stage's effective rates (``lr_scale`` applied)."""
        return {g: float(v) * self.lr_scale for g, v in self.lr.as_dict().items()}

    def fill_paper(self, stage: int) -> None:
        for group, value in PAPER[stage]["lr"].items():
            if getattr(self.lr, group) is None:
                setattr(self.lr, group, value)
        if self.token_compression is None:
            self.token_compression = PAPER[stage]["token_compression"]
        if self.image_merge_size is None:
            self.image_merge_size = PAPER[stage]["image_merge_size"]


@dataclass
class TrainSettings:
    """How each step runs, how often to save, when to stop."""

    batch_size: int = 8  # samples each rank draws per batch
    grad_accum: int = 1  # batches per optimizer step (each packed into micro-batches)
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0  # 0: no clipping
    precision: str = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU | bf16 | fp32
    log_every: int = 1  # steps between stdout lines (every step goes to metrics.jsonl)
    checkpoint_every: int = 50  # steps between resumable checkpoints (and one at the end)
    keep_checkpoints: int = 1  # resumable checkpoints kept per stage while it runs
    stop_after: int = 0  # stop this run after N steps of a stage, checkpointed (0: never)

    def __post_init__(self) -> None:
        for name in ("batch_size", "grad_accum", "log_every", "checkpoint_every"):
            require(getattr(self, name) >= 1, name, "must be at least 1")
        require(self.keep_checkpoints >= 1, "keep_checkpoints", "must be at least 1")
        require(self.weight_decay >= 0, "weight_decay", "must be 0 or more")
        require(self.max_grad_norm >= 0, "max_grad_norm", "must be 0 (off) or more")
        require(self.stop_after >= 0, "stop_after", "must be 0 (never) or more")
        require(
            self.precision in PRECISIONS,
            "precision",
            f"{self.precision!r} is not one of {PRECISIONS}",
        )


@dataclass
class TrainConfig:
    """The four-stage training of a compact VideoLLaMA3 on our mixtures."""

    name: str = "videollama3-compact"
    output: str = "out/train"  # stage{N}/final, stage{N}/checkpoints, metrics, report.html
    seed: int = 0  # model initialisation (the data order is each recipe's own seed)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainSettings = field(default_factory=TrainSettings)
    stage1: StageConfig = field(default_factory=StageConfig)
    stage2: StageConfig = field(default_factory=StageConfig)
    stage3: StageConfig = field(default_factory=StageConfig)
    stage4: StageConfig = field(default_factory=StageConfig)
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        require(bool(self.name), "name", "is empty")
        require(bool(self.output), "output", "is empty", "e.g. output: out/train_compact")
        require(self.seed >= 0, "seed", "must be 0 or more")
        require(
            self.log_level.upper() in ("DEBUG", "INFO", "WARNING", "ERROR"),
            "log_level",
            f"{self.log_level!r} is not a log level",
        )
        for n in STAGES:
            stage = self.stage(n)
            stage.fill_paper(n)
            require(
                any(v > 0 for v in stage.lrs().values()),
                f"stage{n}.lr",
                "every group is frozen: nothing to train",
            )

    def stage(self, n: int) -> StageConfig:
        return getattr(self, f"stage{n}")

    def check_runnable(self, stages: list[int]) -> None:
        """Before any work: every stage to run names an existing recipe; the 2B layout has a
        tokenizer of its size."""
        for n in stages:
            recipe = self.stage(n).recipe
            require(
                bool(recipe) and Path(recipe).is_file(),
                f"stage{n}.recipe",
                f"{recipe!r} is not a recipe file",
                "e.g. mixtures/recipes/demo_stage1.yaml",
            )
        m = self.model
        require(
            bool(m.init_llm) == bool(m.init_vision),
            "model.init_vision" if m.init_llm else "model.init_llm",
            "starting from parts needs both the LLM and the vision encoder",
            "--set model.init_llm=/path/to/Qwen2.5-1.5B --set model.init_vision=/path/to/siglip",
        )
        require(
            not (m.init and m.init_llm),
            "model.init",
            "a VideoLLaMA3 checkpoint and separate parts (init_llm, init_vision) both given",
            "keep one: model.init, or model.init_llm with model.init_vision",
        )
        require(
            m.preset != "2b" or bool(m.init or m.tokenizer or m.init_llm),
            "model.tokenizer",
            "the 2b preset needs Qwen2.5's tokenizer, not one trained here",
            "--set model.tokenizer=/path/to/Qwen2.5-1.5B (or model.init=a checkpoint)",
        )
        for name in ("init", "tokenizer", "init_llm", "init_vision"):
            path = getattr(self.model, name)
            require(
                not path or Path(path).is_dir(),
                f"model.{name}",
                f"{path!r} is not a local directory",
            )
        if m.init_llm and 1 in stages:  # their kinds, from config.json alone
            # here, not at the top: model.init_parts reaches torch (through model.build), and
            # loading a config (vl3data build --plan) should not
            from model.init_parts import PartsError, check_parts

            try:
                check_parts(m.init_llm, m.init_vision)
            except PartsError as exc:
                raise ConfigError(exc.field, str(exc).split(": ", 1)[1]) from None


__all__ = [
    "DataConfig",
    "LrConfig",
    "ModelConfig",
    "StageConfig",
    "TrainConfig",
    "TrainSettings",
]
