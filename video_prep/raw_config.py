"""The ``video-raw`` job's config: one YAML per folder of raw footage (``video_raw_*.yaml``).

Raw videos have no dense captions: clips come from scene cuts (:mod:`video_prep.scenes`) and
their captions from a model (:mod:`video_prep.clip_captions`), through the same engines, gates
and retries as image recaptioning (``recaption``). Frames, tasks and shard limits are the
caption-bounded job's own settings (:mod:`video_prep.config`), so both paths sample alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from engine.config import RayConfig
from manifests.configs import require
from manifests.shards import ShardLimits
from recaption.config import SubsetConfig
from recaption.engines.base import EngineConfig, SamplingConfig
from recaption.gates import GateConfig
from video_prep.config import (
    TASKS,
    VIDEO_EXTENSIONS,
    CaptionTaskConfig,
    FramesConfig,
    GroundingTaskConfig,
    StreamingTaskConfig,
)
from video_prep.scenes import SCENE_THRESHOLD

KINDS = ("short", "detailed")
RUN_IN = ("auto", "tasks", "pool")
SHORT_MODEL_PROMPT = "Describe what happens in this video clip in one sentence."
DETAILED_MODEL_PROMPT = (
    "Describe this video clip in detail: the scene, the people and objects in it, what they do "
    "and how it changes over time."
)
SHORT_INSTRUCTIONS = [
    "Describe the video briefly.",
    "What happens in this video? Answer in one sentence.",
    "Give a one-sentence summary of the video.",
]


@dataclass
class RawInputConfig:
    """A folder of video files, walked recursively; no annotation file."""

    videos: str = ""
    partition_size: int = 4  # videos per partition: the unit of parallel work and of resume
    max_partitions: int | None = None  # only the first N partitions (a trial, a build --pilot)
    extensions: list[str] = field(default_factory=lambda: list(VIDEO_EXTENSIONS))

    def __post_init__(self) -> None:
        require(self.partition_size >= 1, "input.partition_size", "must be at least 1")
        require(
            self.max_partitions is None or self.max_partitions >= 1,
            "input.max_partitions",
            "must be at least 1",
            "null for every video",
        )
        require(bool(self.extensions), "input.extensions", "is empty", f"{VIDEO_EXTENSIONS}")


@dataclass
class ScenesConfig:
    """ffmpeg's scene score (0..1) over which a frame starts a new shot."""

    threshold: float = SCENE_THRESHOLD
    min_shot_s: float = 0.2  # a cut this close after the previous one counts once

    def __post_init__(self) -> None:
        require(0 < self.threshold < 1, "scenes.threshold", "must be in (0, 1)", "0.3")
        require(self.min_shot_s >= 0, "scenes.min_shot_s", "must be 0 or more")


@dataclass
class RawClipsConfig:
    """Shots into clips: split past ``max_len_s``, merged or dropped under ``min_len_s``."""

    max_len_s: float = 120.0  # the paper's two minutes
    min_len_s: float = 2.0

    def __post_init__(self) -> None:
        require(self.max_len_s >= 1, "clips.max_len_s", "must be at least 1 second", "120")
        require(self.min_len_s > 0, "clips.min_len_s", "must be positive", "2.0")
        require(
            self.max_len_s >= 2 * self.min_len_s,
            "clips.max_len_s",
            "must be at least twice clips.min_len_s (a split shot's parts must be long enough)",
        )


def _subset(prompt_tokens: int, min_chars: int, enabled: bool = True) -> SubsetConfig:
    return SubsetConfig(
        enabled=enabled,
        engine=EngineConfig(model="OpenGVLab/InternVL2-8B"),
        sampling=SamplingConfig(max_new_tokens=prompt_tokens),
        gates=GateConfig(min_chars=min_chars),
        retry=[SamplingConfig(max_new_tokens=prompt_tokens, repetition_penalty=1.2)],
    )


@dataclass
class ClipCaptionsConfig:
    """Captions of each clip by a vision-language model: ``short`` (one sentence; grounding
    questions and streaming answers use it) and ``detailed`` (optional caption samples). Each
    is a recaption subset: its engine, sampling, quality gates and retries."""

    max_frames: int = 16  # of the clip's 1-fps frames, uniformly, sent with their timestamps
    short_model_prompt: str = SHORT_MODEL_PROMPT
    detailed_model_prompt: str = DETAILED_MODEL_PROMPT
    short: SubsetConfig = field(default_factory=lambda: _subset(77, 10))
    detailed: SubsetConfig = field(default_factory=lambda: _subset(512, 100))
    # where the captions run: "tasks" (inside the partition tasks that decode: one pass, the
    # model loaded once per worker process), "pool" (a Ray Data actor pool, its own pass) or
    # "auto": tasks when every engine is transformers on CPU or a server (openai), else a pool
    # (video_prep.raw_captions)
    run_in: str = "auto"

    def __post_init__(self) -> None:
        require(self.max_frames >= 1, "captions.max_frames", "must be at least 1", "16")
        require(self.run_in in RUN_IN, "captions.run_in", f"{self.run_in!r} is not one of {RUN_IN}")
        require(self.short.enabled, "captions.short.enabled", "grounding and streaming need it")
        for kind in KINDS:
            text = getattr(self, f"{kind}_model_prompt")
            require(
                isinstance(text, str) and bool(text.strip()),
                f"captions.{kind}_model_prompt",
                "must be a non-empty string",
            )

    def kinds(self) -> list[str]:
        return [k for k in KINDS if getattr(self, k).enabled]

    def model_prompt(self, kind: str) -> str:
        return getattr(self, f"{kind}_model_prompt")


@dataclass
class RawCaptionTaskConfig(CaptionTaskConfig):
    """Caption samples: ``instructions`` for detailed captions, ``short_instructions`` for
    short ones (one sample per clip and caption kind)."""

    short_instructions: list[str] = field(default_factory=lambda: list(SHORT_INSTRUCTIONS))

    def __post_init__(self) -> None:
        super().__post_init__()
        require(bool(self.short_instructions), "caption.short_instructions", "is empty")


@dataclass
class RawGroundingConfig(GroundingTaskConfig):
    """Grounding and streaming samples span a window of consecutive clips of one video."""

    window_s: float = 120.0  # longest window of consecutive clips (seconds)
    min_clips: int = 2  # a window of one clip asks nothing its whole span does not answer

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.window_s >= 1, "grounding.window_s", "must be at least 1 second")
        require(self.min_clips >= 2, "grounding.min_clips", "must be at least 2")


@dataclass
class RawVideoConfig:
    """Raw videos in; caption, streaming and grounding shard sets out (OUT/{task}/)."""

    name: str = "raw-videos"
    output: str = ""
    tasks: list[str] = field(default_factory=lambda: list(TASKS))
    seed: int = 0  # instruction rotation
    input: RawInputConfig = field(default_factory=RawInputConfig)
    frames: FramesConfig = field(default_factory=FramesConfig)
    scenes: ScenesConfig = field(default_factory=ScenesConfig)
    clips: RawClipsConfig = field(default_factory=RawClipsConfig)
    captions: ClipCaptionsConfig = field(default_factory=ClipCaptionsConfig)
    caption: RawCaptionTaskConfig = field(default_factory=RawCaptionTaskConfig)
    streaming: StreamingTaskConfig = field(default_factory=StreamingTaskConfig)
    grounding: RawGroundingConfig = field(default_factory=RawGroundingConfig)
    shards: ShardLimits = field(default_factory=lambda: ShardLimits(max_count=1000))
    ray: RayConfig = field(default_factory=RayConfig)
    log_level: str = "INFO"
    keep_work: bool = False

    def __post_init__(self) -> None:
        require(bool(self.tasks), "tasks", "is empty", f"one or more of {list(TASKS)}")
        for t in self.tasks:
            require(t in TASKS, "tasks", f"{t!r} is not one of {TASKS}")
        require(len(set(self.tasks)) == len(self.tasks), "tasks", "lists a task twice")
        require(
            self.clips.min_len_s * self.frames.fps >= 1,
            "clips.min_len_s",
            f"must hold one frame of the {self.frames.fps:g}-fps grid"
            f" (at least {1 / self.frames.fps:g} s)",
        )
        require(
            self.log_level.upper() in ("DEBUG", "INFO", "WARNING", "ERROR"),
            "log_level",
            f"{self.log_level!r} is not a log level",
            "DEBUG, INFO, WARNING or ERROR",
        )

    def check_runnable(self) -> None:
        """Checks that need the file system, before any work starts."""
        require(bool(self.output), "output", "is empty", "--set output=/path/to/out")
        require(
            bool(self.input.videos) and Path(self.input.videos).is_dir(),
            "input.videos",
            f"{self.input.videos!r} is not a folder",
            "--set input.videos=/path/to/videos",
        )
