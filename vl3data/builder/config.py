"""The build's own YAML: which jobs make up the graph, each with its job config(s) and overrides.

A build config names jobs, not edges: the edges follow from the paths each job reads and writes
(:mod:`vl3data.builder.graph`). ``${name}`` in any string below is replaced by ``paths.name``, so
one ``--set paths.out=/mnt/shared/out`` moves every output (the cluster case: configs keep
relative paths, the command line says where the shared storage is).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields, is_dataclass

from manifests.configs import ConfigError, require

#: the jobs a ``videos`` entry may name
VIDEO_JOBS = ("video", "video-raw")
_VAR = re.compile(r"\$\{([^}]*)\}")


@dataclass
class JobSpec:
    """One job of the graph: its config YAML(s) (later ones override earlier ones, as on the
    command line), ``FIELD=VALUE`` overrides, and where it writes."""

    config: list[str] = field(default_factory=list)
    set: list[str] = field(default_factory=list)
    output: str = ""


@dataclass
class VideoSpec(JobSpec):
    """One video source (ActivityNet, YouCook2, ...): a ``vl3data video`` job of its own, or
    with ``job: video-raw`` a folder of raw footage (scene cuts, model captions)."""

    name: str = ""
    job: str = "video"  # video | video-raw


@dataclass
class ImportSpec(JobSpec):
    """One public dataset imported (``vl3data import``): a node of its own, ``import.<name>``."""

    name: str = ""


@dataclass
class MixSpec:
    """One stage mixture: a recipe, with the paths of its sources that this build makes."""

    stage: int = 0
    recipe: str = ""
    sources: dict[str, str] = field(default_factory=dict)  # source name -> shard set path
    set: list[str] = field(default_factory=list)  # recipe overrides, e.g. total=1000
    output: str = ""
    shuffle_buffer: int = 10_000


@dataclass
class TrainSpec(JobSpec):
    """The trainer: one node per stage, each reading its stage's mixture from this build."""

    stages: list[int] = field(default_factory=lambda: [1, 2, 3, 4])
    num_gpus: float = 0.0  # per stage node; >0 schedules the node on a GPU worker
    # >0: each stage runs data parallel on this many Ray Train workers (model/ray_launch.py),
    # each with one GPU when use_gpu; 0: in the node's own process
    workers: int = 0
    use_gpu: bool = False
    cpus_per_worker: float = 1.0


@dataclass
class BuildRay:
    """Where the build runs. No address: an embedded Ray (or the cluster of a ``ray job``)."""

    address: str | None = None
    num_cpus: int | None = None
    object_store_mb: int | None = None


@dataclass
class BuildConfig:
    """A whole build: raw sources to trained checkpoints."""

    name: str = "build"
    paths: dict[str, str] = field(default_factory=dict)  # ${name} variables
    curate: JobSpec | None = None
    recaption: JobSpec | None = None  # reads curate's output
    videos: list[VideoSpec] = field(default_factory=list)
    imports: list[ImportSpec] = field(default_factory=list)  # OUT/{image,video,text} each
    mixtures: list[MixSpec] = field(default_factory=list)
    train: TrainSpec | None = None
    state: str = "${out}/.build"  # per-node state: running/failed markers, logs
    max_parallel: int = 2  # nodes running at once (the image and video branches)
    ray: BuildRay = field(default_factory=BuildRay)
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        require(bool(self.name), "name", "is empty")
        require(self.max_parallel >= 1, "max_parallel", "must be at least 1")
        require(
            self.log_level.upper() in ("DEBUG", "INFO", "WARNING", "ERROR"),
            "log_level",
            f"{self.log_level!r} is not a log level",
        )
        for key, value in self.paths.items():
            require(
                isinstance(value, str) and bool(value) and "${" not in value,
                f"paths.{key}",
                f"{value!r} must be a non-empty path without ${{...}}",
            )
        _expand(self, self.paths, "")
        jobs: list[tuple[str, JobSpec]] = []
        if self.curate:
            jobs.append(("curate", self.curate))
        if self.recaption:
            jobs.append(("recaption", self.recaption))
            require(self.curate is not None, "recaption", "needs a curate job to read from")
        jobs += [(f"videos[{i}]", v) for i, v in enumerate(self.videos)]
        jobs += [(f"imports[{i}]", v) for i, v in enumerate(self.imports)]
        if self.train:
            jobs.append(("train", self.train))
        for where, job in jobs:
            require(
                bool(job.config), f"{where}.config", "names no YAML", "config: [configs/X.yaml]"
            )
            require(bool(job.output), f"{where}.output", "is empty", "output: ${out}/NAME")
            for i, assignment in enumerate(job.set):
                require(
                    "=" in assignment,
                    f"{where}.set[{i}]",
                    f"{assignment!r} is not FIELD=VALUE",
                    "e.g. input.partition_size=64",
                )
                require(
                    not assignment.startswith("output="),
                    f"{where}.set[{i}]",
                    "sets output",
                    f"give {where}.output instead",
                )
        names = [v.name for v in self.videos]
        for i, v in enumerate(self.videos):
            require(
                bool(re.fullmatch(r"[A-Za-z0-9_-]+", v.name)),
                f"videos[{i}].name",
                f"{v.name!r} must be letters, digits, - or _",
            )
            require(v.name not in names[:i], f"videos[{i}].name", f"{v.name!r} is used twice")
            require(
                v.job in VIDEO_JOBS,
                f"videos[{i}].job",
                f"{v.job!r} is not one of {VIDEO_JOBS}",
                "video (with annotations) or video-raw (raw footage)",
            )
        names = [v.name for v in self.imports]
        for i, v in enumerate(self.imports):
            require(
                bool(re.fullmatch(r"[A-Za-z0-9_-]+", v.name)),
                f"imports[{i}].name",
                f"{v.name!r} must be letters, digits, - or _",
            )
            require(v.name not in names[:i], f"imports[{i}].name", f"{v.name!r} is used twice")
        stages = [m.stage for m in self.mixtures]
        for i, m in enumerate(self.mixtures):
            require(m.stage in (1, 2, 3, 4), f"mixtures[{i}].stage", "must be 1, 2, 3 or 4")
            require(m.stage not in stages[:i], f"mixtures[{i}].stage", "has two mixtures")
            require(bool(m.recipe), f"mixtures[{i}].recipe", "is empty")
            require(bool(m.output), f"mixtures[{i}].output", "is empty")
            require(m.shuffle_buffer >= 1, f"mixtures[{i}].shuffle_buffer", "must be at least 1")
        if self.train:
            require(
                bool(self.train.stages) and all(n in (1, 2, 3, 4) for n in self.train.stages),
                "train.stages",
                f"{self.train.stages} must list stages 1 to 4",
            )
            for n in self.train.stages:
                require(
                    n in stages,
                    "train.stages",
                    f"stage {n} has no mixture in this build",
                    f"add a mixtures entry with stage: {n}",
                )
            self.train.stages = sorted(set(self.train.stages))
            t = self.train
            require(t.num_gpus >= 0, "train.num_gpus", "must be 0 or more")
            require(t.workers >= 0, "train.workers", "must be 0 (in-process) or more")
            require(
                not (t.workers and t.num_gpus),
                "train.num_gpus",
                "with train.workers the GPUs are the workers' (use_gpu), not the node's",
                "set train.num_gpus: 0 and train.use_gpu: true",
            )
            require(
                not t.use_gpu or t.workers > 0,
                "train.use_gpu",
                "only applies to Ray Train workers",
                "set train.workers (or use train.num_gpus for one in-process GPU)",
            )
            require(t.cpus_per_worker > 0, "train.cpus_per_worker", "must be positive")


def _expand(obj, paths: dict[str, str], prefix: str) -> None:
    """Replace ``${name}`` in every string field of ``obj`` (recursively) by ``paths[name]``."""

    def sub(value: str, where: str) -> str:
        def one(m: re.Match) -> str:
            if m.group(1) not in paths:
                known = ", ".join(sorted(paths)) or "none"
                raise ConfigError(
                    where,
                    f"${{{m.group(1)}}} is not defined (defined: {known})",
                    f"add it under paths:, or --set paths.{m.group(1)}=/some/path",
                )
            return paths[m.group(1)]

        return _VAR.sub(one, value)

    def walk(value, where: str):
        if isinstance(value, str):
            return sub(value, where)
        if isinstance(value, list):
            return [walk(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, dict):
            return {k: walk(v, f"{where}.{k}") for k, v in value.items()}
        if is_dataclass(value):
            _expand(value, paths, where)
        return value

    for f in fields(obj):
        if f.name == "paths":
            continue
        where = f"{prefix}.{f.name}" if prefix else f.name
        setattr(obj, f.name, walk(getattr(obj, f.name), where))
