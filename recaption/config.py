"""The recaption job's config: one YAML (``configs/recaption_internvl2.yaml``), validated on load.

Two subsets, as in the paper: ``short`` (InternVL2-8B, VL3-Syn7M-short, stage 1) and ``detailed``
(InternVL2-26B, VL3-Syn7M-detailed, stage 2). Each names its own engine, sampling, gates and the
sampling settings to retry failed captions with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from engine.config import RayConfig
from manifests.configs import require
from manifests.shards import ShardLimits
from recaption.engines.base import EngineConfig, SamplingConfig
from recaption.engines.placement import runs_in_tasks
from recaption.gates import REASONS, GateConfig
from recaption.prompts import PromptConfig

SUBSETS = ("short", "detailed")
RUN_IN = ("auto", "tasks", "pool")
#: a caption failing these may come out right with other sampling settings
RETRYABLE_DEFAULT = [
    "empty",
    "garbled",
    "truncated",
    "repetition",
    "refusal",
    "wrong_language",
    "too_short",
]


@dataclass
class SubsetConfig:
    """One caption subset: which model writes it, how, and what a good caption is."""

    enabled: bool = True
    engine: EngineConfig = field(default_factory=EngineConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    gates: GateConfig = field(default_factory=GateConfig)
    # tried in order on captions failing a retryable gate, e.g. a higher repetition penalty
    retry: list[SamplingConfig] = field(default_factory=list)
    retry_reasons: list[str] = field(default_factory=lambda: list(RETRYABLE_DEFAULT))
    # gate reasons to let through anyway (e.g. truncated, for a model known to run long)
    accept: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name in ("retry_reasons", "accept"):
            for r in getattr(self, name):
                require(r in REASONS, name, f"{r!r} is not a gate reason {REASONS}")
        for r in ("empty", "engine_error"):
            require(r not in self.accept, "accept", f"{r} captions can never be written")


def _short() -> SubsetConfig:
    return SubsetConfig(
        engine=EngineConfig(model="OpenGVLab/InternVL2-8B"),
        sampling=SamplingConfig(max_new_tokens=77),
        gates=GateConfig(min_chars=10),
        retry=[SamplingConfig(max_new_tokens=77, repetition_penalty=1.2)],
    )


def _detailed() -> SubsetConfig:
    return SubsetConfig(
        engine=EngineConfig(model="OpenGVLab/InternVL2-26B"),
        sampling=SamplingConfig(max_new_tokens=512),
        gates=GateConfig(min_chars=100),
        retry=[SamplingConfig(max_new_tokens=768, repetition_penalty=1.1)],
    )


@dataclass
class InputConfig:
    path: str = ""  # a curated shard set (dataset.json, shards/)
    partition_size: int = 256  # images per partition: the unit of parallel work and of resume

    def __post_init__(self) -> None:
        require(self.partition_size >= 1, "input.partition_size", "must be at least 1")


@dataclass
class RecaptionConfig:
    """Curated images in; VL3-Syn7M-short and -detailed shard sets out (OUT/short, OUT/detailed)."""

    name: str = "vl3-syn7m"
    output: str = ""
    input: InputConfig = field(default_factory=InputConfig)
    prompts: PromptConfig = field(default_factory=PromptConfig)
    short: SubsetConfig = field(default_factory=_short)
    detailed: SubsetConfig = field(default_factory=_detailed)
    shards: ShardLimits = field(default_factory=ShardLimits)
    ray: RayConfig = field(default_factory=RayConfig)
    # where the captions run: "auto" (in the partition tasks when every engine is transformers
    # on the CPU or an OpenAI-compatible server: recaption.in_task; else an actor pool),
    # "tasks" or "pool"
    run_in: str = "auto"
    plan_images: int = 32  # images `--plan` captions to measure rates
    log_level: str = "INFO"
    keep_work: bool = False

    def __post_init__(self) -> None:
        require(
            self.short.enabled or self.detailed.enabled,
            "short.enabled",
            "both subsets are disabled: nothing to do",
            "enable short or detailed",
        )
        require(self.plan_images >= 1, "plan_images", "must be at least 1")
        require(
            self.run_in in RUN_IN,
            "run_in",
            f"{self.run_in!r} is not one of {RUN_IN}",
            "auto (the default), tasks or pool",
        )
        require(
            self.log_level.upper() in ("DEBUG", "INFO", "WARNING", "ERROR"),
            "log_level",
            f"{self.log_level!r} is not a log level",
            "DEBUG, INFO, WARNING or ERROR",
        )

    def subsets(self) -> list[str]:
        return [s for s in SUBSETS if getattr(self, s).enabled]

    def in_tasks(self) -> bool:
        """Whether the captions run inside the partition tasks (``run_in``; ``auto``: when
        every enabled subset's engine can: :func:`recaption.engines.placement.runs_in_tasks`)."""
        if self.run_in != "auto":
            return self.run_in == "tasks"
        return all(runs_in_tasks(getattr(self, k).engine) for k in self.subsets())

    def check_runnable(self) -> None:
        require(bool(self.output), "output", "is empty", "--output /path/to/out")
        require(
            bool(self.input.path) and (Path(self.input.path) / "dataset.json").is_file(),
            "input.path",
            f"{self.input.path!r} is not a finished shard set (no dataset.json)",
            "--input /path/to/curated (the output of `vl3data curate`)",
        )
