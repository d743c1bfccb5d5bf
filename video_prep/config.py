"""The video job's config: one YAML per annotation source (``configs/video_*.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from engine.config import RayConfig
from manifests.configs import require
from manifests.shards import ShardLimits

FORMATS = ("activitynet", "youcook2", "charades", "jsonl")
TASKS = ("caption", "streaming", "grounding")
VIDEO_EXTENSIONS = ["mp4", "mkv", "webm", "avi", "mov", "m4v"]


@dataclass
class VideoInputConfig:
    """Videos under one root and one annotation file naming them."""

    videos: str = ""  # folder of video files
    annotations: str = ""  # annotation file in ``format``
    format: str = "jsonl"  # activitynet | youcook2 | charades | jsonl
    partition_size: int = 4  # videos per partition: the unit of parallel work and of resume
    # only the first N partitions (a trial run or a build --pilot); null: every video
    max_partitions: int | None = None
    extensions: list[str] = field(default_factory=lambda: list(VIDEO_EXTENSIONS))

    def __post_init__(self) -> None:
        require(self.format in FORMATS, "input.format", f"{self.format!r} is not one of {FORMATS}")
        require(self.partition_size >= 1, "input.partition_size", "must be at least 1")
        require(
            self.max_partitions is None or self.max_partitions >= 1,
            "input.max_partitions",
            "must be at least 1",
            "null for every video",
        )


@dataclass
class FramesConfig:
    """Frame sampling, as VideoLLaMA3 loads videos: 1 fps, uniformly capped at 180 frames."""

    fps: float = 1.0
    max_frames: int = 180
    max_side: int | None = 640  # longer side of stored frames; null keeps the original size
    jpeg_quality: int = 90
    decode_timeout_s: float | None = None  # default: max(60 s, 2 x the video's duration)
    # ffmpeg decoder threads per video; 0 = ffmpeg's default (one per core, in every process,
    # which oversubscribes the CPUs when Ray runs a video per CPU)
    decode_threads: int = 1

    def __post_init__(self) -> None:
        require(self.fps > 0, "frames.fps", "must be positive", "1.0, as in the paper")
        require(self.max_frames >= 1, "frames.max_frames", "must be at least 1", "180")
        require(self.max_side is None or self.max_side >= 16, "frames.max_side", "must be >= 16")
        require(1 <= self.jpeg_quality <= 100, "frames.jpeg_quality", "must be in 1..100")
        require(
            self.decode_threads >= 0,
            "frames.decode_threads",
            "must be >= 0",
            "1 (one per video; 0 lets ffmpeg take one per core)",
        )


@dataclass
class ClipsConfig:
    """Long videos are cut at dense-caption boundaries into clips of at most ``max_len_s``."""

    max_len_s: float = 120.0  # the paper's two minutes
    min_captions_per_min: float = 0.5  # sparser clips are dropped (reason captions_too_sparse)
    max_captions_per_min: float = 30.0  # denser clips are dropped (reason captions_too_dense)
    density_min_len_s: float = 10.0  # shorter clips are never judged by density

    def __post_init__(self) -> None:
        require(self.max_len_s >= 1, "clips.max_len_s", "must be at least 1 second", "120")
        require(self.min_captions_per_min >= 0, "clips.min_captions_per_min", "must be >= 0")
        require(
            self.max_captions_per_min > self.min_captions_per_min,
            "clips.max_captions_per_min",
            "must be above clips.min_captions_per_min",
        )


@dataclass
class CaptionTaskConfig:
    instructions: list[str] = field(
        default_factory=lambda: [
            "Describe the video in detail.",
            "Describe what happens in this video, in order.",
            "Give a detailed account of the events in the video.",
            "What happens in the video? Describe each event.",
        ]
    )
    timestamps: bool = False  # prefix each event with its "s-e s" interval

    def __post_init__(self) -> None:
        require(bool(self.instructions), "caption.instructions", "is empty")


@dataclass
class StreamingTaskConfig:
    max_frames: int = 400  # VideoLLaMA3's STREAM_MAX_FRAMES
    instructions: list[str] = field(
        default_factory=lambda: [
            "Describe the events in the video as they happen.",
            "Narrate this video live: say what happens when it happens.",
            "Watch the video and describe each event as soon as it ends.",
        ]
    )

    def __post_init__(self) -> None:
        require(self.max_frames >= 1, "streaming.max_frames", "must be at least 1")
        require(bool(self.instructions), "streaming.instructions", "is empty")


@dataclass
class GroundingTaskConfig:
    questions: list[str] = field(
        default_factory=lambda: [
            "When does '{sentence}' happen in the video? Answer with the start and end times.",
            "Find the moment in the video where '{sentence}'. Give its start and end in seconds.",
            "At what time interval does the following happen: '{sentence}'?",
        ]
    )
    turns_per_sample: int = 1  # more shares a clip's frames between several questions

    def __post_init__(self) -> None:
        require(bool(self.questions), "grounding.questions", "is empty")
        for i, q in enumerate(self.questions):
            require("{sentence}" in q, f"grounding.questions[{i}]", "lacks '{sentence}'")
        require(self.turns_per_sample >= 1, "grounding.turns_per_sample", "must be at least 1")


@dataclass
class VideoConfig:
    """One video job: videos + annotations in; a shard set per task out (OUT/{task}/)."""

    name: str = "videos"
    output: str = ""
    tasks: list[str] = field(default_factory=lambda: list(TASKS))
    seed: int = 0  # instruction rotation
    input: VideoInputConfig = field(default_factory=VideoInputConfig)
    frames: FramesConfig = field(default_factory=FramesConfig)
    clips: ClipsConfig = field(default_factory=ClipsConfig)
    caption: CaptionTaskConfig = field(default_factory=CaptionTaskConfig)
    streaming: StreamingTaskConfig = field(default_factory=StreamingTaskConfig)
    grounding: GroundingTaskConfig = field(default_factory=GroundingTaskConfig)
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
        require(
            bool(self.input.annotations) and Path(self.input.annotations).is_file(),
            "input.annotations",
            f"{self.input.annotations!r} is not a file",
            "--set input.annotations=/path/to/annotations",
        )
