"""The curation job's config: one YAML (``configs/curate_local.yaml``), validated on load."""

from __future__ import annotations

from dataclasses import dataclass, field

from curation.address_gate import parse_networks
from curation.config_models import (
    AestheticConfig,
    CaptionConfig,
    ClipConfig,
    ClusterConfig,
    SimilarityConfig,
)
from curation.decontam_config import DecontamConfig
from curation.dedup_config import DedupConfig
from curation.prefilter_config import PrefilterConfig
from engine.config import RayConfig
from manifests.configs import ConfigError, require

INPUT_KINDS = ("folder", "webdataset", "url_parquet")
IMAGE_EXTENSIONS = ["jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff"]


def _short(exc: BaseException) -> str:
    """An exception's first line, without the chain of wrapped library errors."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}"


@dataclass
class InputConfig:
    """Where the raw pool is and how to cut it into partitions (the unit of resume)."""

    kind: str = "folder"  # folder | webdataset | url_parquet
    path: str = ""  # a folder; a tar, a folder of tars or a glob; a parquet, folder or glob
    partition_size: int = 256  # inputs per partition: finished partitions survive a crash
    # only the first N partitions (a trial run or a build --pilot); null: the whole pool
    max_partitions: int | None = None
    extensions: list[str] = field(default_factory=lambda: list(IMAGE_EXTENSIONS))
    max_file_bytes: int = 50_000_000  # larger files or tar members: ledger reason file_too_large
    url_column: str = "url"
    text_column: str = "text"
    width_column: str = "width"
    height_column: str = "height"

    def __post_init__(self) -> None:
        require(
            self.kind in INPUT_KINDS, "input.kind", f"{self.kind!r} is not one of {INPUT_KINDS}"
        )
        require(self.partition_size >= 1, "input.partition_size", "must be at least 1")
        require(
            self.max_partitions is None or self.max_partitions >= 1,
            "input.max_partitions",
            "must be at least 1",
            "null for the whole pool",
        )
        require(self.max_file_bytes > 0, "input.max_file_bytes", "must be positive")
        self.extensions = [e.lower().lstrip(".") for e in self.extensions]


@dataclass
class DownloadConfig:
    """HTTP fetching for ``url_parquet`` inputs. Only http(s); sizes and time are capped."""

    concurrency: int = 16  # parallel requests per worker
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 10.0  # silence between bytes
    total_timeout_s: float = 30.0  # whole request, so a trickling server cannot hold a worker
    retries: int = 2  # for timeouts, connection errors, 429 and 5xx
    backoff_s: float = 0.5  # doubled each retry
    max_bytes: int = 20_000_000  # larger bodies are cut off: ledger reason too_large
    max_redirects: int = 5
    user_agent: str = "vl3data/0.1 (+https://github.com/vl3data/vl3data)"
    # networks that may be fetched although not public (loopback, private...): e.g.
    # ["127.0.0.1/32"] for a test server. Empty: public addresses only (ledger: private_address)
    allow_addresses: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        require(self.concurrency >= 1, "download.concurrency", "must be at least 1")
        try:
            parse_networks(self.allow_addresses)
        except (ValueError, TypeError) as exc:
            require(False, "download.allow_addresses", str(exc), "e.g. [127.0.0.1/32, 10.0.0.0/8]")
        for name in ("connect_timeout_s", "read_timeout_s", "total_timeout_s"):
            require(getattr(self, name) > 0, f"download.{name}", "must be positive")
        require(self.retries >= 0, "download.retries", "must be 0 or more")
        require(self.backoff_s >= 0, "download.backoff_s", "must be 0 or more")
        require(self.max_bytes > 0, "download.max_bytes", "must be positive")
        require(self.max_redirects >= 0, "download.max_redirects", "must be 0 or more")


@dataclass
class FilterConfig:
    """The first stage's filters. The paper removes extreme shapes; 1:3 to 3:1 by default."""

    min_aspect: float = 1 / 3  # width / height
    max_aspect: float = 3.0
    min_side: int = 64  # shorter side in pixels
    max_pixels: int = 64_000_000  # larger headers are refused before decoding (bombs)

    def __post_init__(self) -> None:
        require(self.min_aspect > 0, "filters.min_aspect", "must be positive", "e.g. 0.333")
        require(
            self.max_aspect >= self.min_aspect,
            "filters.max_aspect",
            f"must be >= filters.min_aspect ({self.min_aspect})",
        )
        require(self.min_side >= 1, "filters.min_side", "must be at least 1")
        require(self.max_pixels >= 1, "filters.max_pixels", "must be at least 1")


@dataclass
class DecodeConfig:
    """How images are checked and stored."""

    verify: bool = True  # decode the pixels to catch truncated / corrupt files
    draft: bool = True  # JPEG DCT scaling: decode at reduced size when that suffices
    # JPEGs are verified at the smallest DCT scale at least this large: every byte is still
    # entropy-decoded (truncation and corrupt data are caught) at half the CPU of a full decode
    verify_size: int = 16
    store_max_side: int | None = None  # resize stored images; None keeps the original bytes
    jpeg_quality: int = 95  # for images we had to re-encode (odd modes, EXIF rotation, resize)
    thumbs_per_reason: int = 8  # thumbnails of dropped images per partition and reason

    def __post_init__(self) -> None:
        require(self.verify_size >= 16, "decode.verify_size", "must be at least 16")
        require(
            self.store_max_side is None or self.store_max_side >= 16,
            "decode.store_max_side",
            "must be at least 16, or null to keep originals",
        )
        require(1 <= self.jpeg_quality <= 100, "decode.jpeg_quality", "must be in 1..100")
        require(self.thumbs_per_reason >= 0, "decode.thumbs_per_reason", "must be 0 or more")


@dataclass
class ShardConfig:
    """WebDataset output: ``shards/{subset}-{000000}.tar``, rotated by count and size."""

    subset: str = "images"
    max_count: int = 10_000
    max_bytes: int = 1_000_000_000

    def __post_init__(self) -> None:
        require(
            self.subset.replace("_", "").replace("-", "").isalnum(),
            "shards.subset",
            f"{self.subset!r} must be letters, digits, '-' or '_'",
        )
        require(self.max_count >= 1, "shards.max_count", "must be at least 1")
        require(self.max_bytes >= 1024, "shards.max_bytes", "must be at least 1024")


@dataclass
class CurateConfig:
    """One curation job: a raw image pool in, a curated shard set out."""

    name: str = "curated-images"
    output: str = ""
    input: InputConfig = field(default_factory=InputConfig)
    download: DownloadConfig = field(default_factory=DownloadConfig)
    filters: FilterConfig = field(default_factory=FilterConfig)
    prefilter: PrefilterConfig = field(default_factory=PrefilterConfig)  # url_parquet columns
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    aesthetic: AestheticConfig = field(default_factory=AestheticConfig)
    caption: CaptionConfig = field(default_factory=CaptionConfig)
    similarity: SimilarityConfig = field(default_factory=SimilarityConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)  # pool-wide, after decoding
    decontam: DecontamConfig = field(default_factory=DecontamConfig)  # copies of eval images
    shards: ShardConfig = field(default_factory=ShardConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    log_level: str = "INFO"
    keep_work: bool = False  # keep the intermediate _work/ folder after success

    def __post_init__(self) -> None:
        require(
            self.log_level.upper() in ("DEBUG", "INFO", "WARNING", "ERROR"),
            "log_level",
            f"{self.log_level!r} is not a log level",
            "DEBUG, INFO, WARNING or ERROR",
        )

        for section in ("aesthetic", "similarity", "cluster"):
            require(
                not getattr(self, section).enabled or self.clip.enabled,
                f"{section}.enabled",
                "needs the CLIP embedding",
                "set clip.enabled: true",
            )
        require(
            not (self.decontam.enabled and self.decontam.semantic) or self.clip.enabled,
            "decontam.semantic",
            "compares CLIP embeddings",
            "set clip.enabled: true",
        )
        require(
            not self.dedup.semantic or self.cluster.enabled,
            "dedup.semantic",
            "compares images inside the k-means clusters",
            "set cluster.enabled: true (and clip.enabled: true)",
        )
        require(
            not self.prefilter.enabled or self.input.kind == "url_parquet",
            "prefilter",
            "filters the columns of a URL parquet",
            "set input.kind: url_parquet, or leave prefilter out",
        )
        require(
            not self.similarity.enabled or self.caption.enabled,
            "similarity.enabled",
            "needs coarse captions to compare",
            "set caption.enabled: true",
        )

    def check_runnable(self) -> None:
        """Checks that need the whole config (and the file system), before any work starts."""
        require(bool(self.output), "output", "is empty", "--set output=/path/to/out")
        require(bool(self.input.path), "input.path", "is empty", "--set input.path=/path/to/pool")
        if self.prefilter.enabled:
            self._check_prefilter_columns()
        self.decontam.check_paths()
        if self.aesthetic.enabled:
            self._fetch_aesthetic_weights()

    def _check_prefilter_columns(self) -> None:
        """Every column the prefilter names is in every parquet of the pool (footers only)."""
        self.prefilter.check_pool(self.input.path)

    def _fetch_aesthetic_weights(self) -> None:
        """Resolve (download once, into the cache) the aesthetic head here, in the driver: an
        offline machine or a wrong URL is then one config error before any work, not a model
        actor dying on every worker with a network traceback."""
        from curation.stages.aesthetic import resolve_weights

        try:
            resolve_weights(self.aesthetic.weights, allow_addresses=self.download.allow_addresses)
        except (OSError, ValueError, RuntimeError) as exc:
            raise ConfigError(
                "aesthetic.weights",
                f"{self.aesthetic.weights!r} could not be fetched: {_short(exc)}",
                "on a machine without internet, copy the .pth file over and set "
                "aesthetic.weights=/path/to/it.pth",
            ) from None
