"""The import job's config: one YAML per public dataset format (``configs/import_*.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from engine.config import RayConfig
from manifests.configs import require
from manifests.shards import ShardLimits
from video_prep.config import FramesConfig

#: llava: LLaVA / ShareGPT4V JSON or JSONL (``image`` a string or a list, ``conversations``);
#: videollama3: VideoLLaMA3's annotations (image lists, ``video`` as a one-element list,
#: streaming records); text: conversations only; parquet: Parquet / Arrow tables with image
#: bytes and a conversation column, as the Hugging Face hub ships them
FORMATS = ("llava", "videollama3", "text", "parquet")
MODALITIES = ("image", "video", "text")
#: what each format may hold when ``modalities`` is not given
FORMAT_MODALITIES = {
    "llava": ["image", "text"],
    "videollama3": ["image", "video", "text"],
    "text": ["text"],
    "parquet": ["image", "text"],
}
NEEDS_MEDIA = ("llava", "videollama3")


@dataclass
class ImportInputConfig:
    """The annotation file (or table) and the folder its media paths are relative to."""

    format: str = "llava"  # llava | videollama3 | text | parquet
    # a .json / .jsonl file; for parquet a .parquet / .arrow file or a folder of them
    annotations: str = ""
    # the folder image and video paths are relative to (VideoLLaMA3's --data_folder); nothing
    # outside it is read, symlinks out included
    media: str = ""
    partition_size: int = 1000  # records per partition: the unit of parallel work and resume
    # only the first N partitions (a trial run or a build --pilot); null: every record
    max_partitions: int | None = None
    max_file_bytes: int = 50_000_000  # an image file or cell above this: file_too_large
    max_video_bytes: int = 8_000_000_000  # a video file above this: file_too_large
    dedupe: bool = True  # exact duplicate records (same bytes) are dropped: duplicate
    # an <image> tag of a video record read as <video> (LLaVA-NeXT's video data, such as
    # LLaVA-Video-178K, writes <image>); false: such a record is a tag_mismatch
    image_tag_for_video: bool = False
    # parquet / arrow columns (the hub's layout: an image struct {bytes, path}, a list of them
    # or raw bytes; conversations as [{from, value}], [{role, content}] or a JSON string)
    image_column: str = "image"
    conversation_column: str = "conversations"

    def __post_init__(self) -> None:
        require(self.format in FORMATS, "input.format", f"{self.format!r} is not one of {FORMATS}")
        require(self.partition_size >= 1, "input.partition_size", "must be at least 1")
        require(
            self.max_partitions is None or self.max_partitions >= 1,
            "input.max_partitions",
            "must be at least 1",
            "null for every record",
        )
        require(self.max_file_bytes > 0, "input.max_file_bytes", "must be positive")
        require(self.max_video_bytes > 0, "input.max_video_bytes", "must be positive")
        for name in ("image_column", "conversation_column"):
            require(bool(getattr(self, name)), f"input.{name}", "is empty")


@dataclass
class ImageChecks:
    """The decode safety caps curation applies to its pool (``curation.stages.decode``)."""

    max_pixels: int = 64_000_000  # refused before decoding: too_many_pixels
    verify: bool = True  # decode every image (a truncated file is an error row)
    draft: bool = True  # JPEG DCT scaling while verifying
    # JPEGs are verified at the smallest DCT scale at least this large (curate's default):
    # every byte is still entropy-decoded, so truncation is caught, at a fraction of the CPU
    verify_size: int = 16
    store_max_side: int | None = None  # null keeps the original size (and bytes)
    jpeg_quality: int = 95  # for the images that must be re-encoded (CMYK, EXIF-rotated, GIF)

    def __post_init__(self) -> None:
        require(self.max_pixels >= 1, "images.max_pixels", "must be at least 1")
        require(self.verify_size >= 16, "images.verify_size", "must be >= 16")
        require(
            self.store_max_side is None or self.store_max_side >= 16,
            "images.store_max_side",
            "must be >= 16",
            "null keeps the original size",
        )
        require(1 <= self.jpeg_quality <= 100, "images.jpeg_quality", "must be in 1..100")


@dataclass
class ImportConfig:
    """One import: an annotation file (+ media) in; a shard set per modality out
    (``OUT/image``, ``OUT/video``, ``OUT/text``)."""

    name: str = "imported"
    output: str = ""
    # which shard sets to write; empty: what the format may hold (FORMAT_MODALITIES)
    modalities: list[str] = field(default_factory=list)
    input: ImportInputConfig = field(default_factory=ImportInputConfig)
    images: ImageChecks = field(default_factory=ImageChecks)
    # video sampling exactly as the video job's (1 fps, at most 180 frames, uniformly)
    frames: FramesConfig = field(default_factory=FramesConfig)
    shards: ShardLimits = field(default_factory=lambda: ShardLimits(max_count=5000))
    ray: RayConfig = field(default_factory=RayConfig)
    log_level: str = "INFO"
    keep_work: bool = False

    def __post_init__(self) -> None:
        if not self.modalities:
            self.modalities = list(FORMAT_MODALITIES[self.input.format])
        for m in self.modalities:
            require(m in MODALITIES, "modalities", f"{m!r} is not one of {MODALITIES}")
        require(len(set(self.modalities)) == len(self.modalities), "modalities", "lists one twice")
        require(
            self.log_level.upper() in ("DEBUG", "INFO", "WARNING", "ERROR"),
            "log_level",
            f"{self.log_level!r} is not a log level",
            "DEBUG, INFO, WARNING or ERROR",
        )

    def check_runnable(self) -> None:
        """Checks that need the file system, before any work starts."""
        inp = self.input
        require(bool(self.output), "output", "is empty", "--set output=/path/to/out")
        path = Path(inp.annotations) if inp.annotations else None
        ok = path is not None and (path.is_file() or (inp.format == "parquet" and path.is_dir()))
        require(
            ok,
            "input.annotations",
            f"{inp.annotations!r} is not a file"
            + (" or a folder of tables" if inp.format == "parquet" else ""),
            "--set input.annotations=/path/to/annotations.jsonl",
        )
        if inp.format in NEEDS_MEDIA:
            require(
                bool(inp.media) and Path(inp.media).is_dir(),
                "input.media",
                f"{inp.media!r} is not a folder",
                "--set input.media=/path/to/media (the folder image/video paths start from)",
            )
