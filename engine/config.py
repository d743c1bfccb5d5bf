"""Config sections every job shares."""

from __future__ import annotations

from dataclasses import dataclass

from manifests.configs import require

EXECUTORS = ("auto", "ray", "processes")


@dataclass
class RayConfig:
    """Where the work runs. No address: an embedded Ray in this process."""

    address: str | None = None  # "auto", "ray://host:10001" or "127.0.0.1:6379"
    num_cpus: int | None = None  # this machine's workers: an embedded Ray's CPUs, or processes
    object_store_mb: int | None = None  # embedded Ray only
    # embedded Ray only: while Ray starts (in the background), the driver runs the first
    # partitions of a pass itself. Off by default: it saved ~1 s on an idle 2-core box, but on
    # a busy one the driver took the core Ray's start needed and the start ran 2-3x longer
    work_while_starting: bool = False
    # where plain partition tasks run: "auto" (local processes unless the job has a model
    # stage, an address is given or Ray is up: engine.local_pool), "ray", or "processes"
    executor: str = "auto"
    # local worker processes that each load a model (the raw-video job's in-task captions):
    # the memory they may take in all, in GiB (default: what the OS reports available when the
    # job starts); the pool starts only as many workers as fit
    memory_gb: float | None = None

    def __post_init__(self) -> None:
        require(self.num_cpus is None or self.num_cpus >= 1, "ray.num_cpus", "must be at least 1")
        require(self.memory_gb is None or self.memory_gb > 0, "ray.memory_gb", "must be positive")
        require(
            self.executor in EXECUTORS,
            "ray.executor",
            f"{self.executor!r} is not one of {EXECUTORS}",
        )
        require(
            not (self.executor == "processes" and self.address),
            "ray.executor",
            "'processes' runs on this machine only, but ray.address names a cluster",
            "drop ray.address, or set ray.executor: ray",
        )
