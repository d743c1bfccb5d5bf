"""Starting or joining Ray: embedded in this process by default, or an existing cluster.

``OUR_PACKAGES`` is the one list of this project's packages shipped to cluster workers
(``runtime_env.py_modules``), so a cluster whose nodes have only the dependencies installed runs
the same code. They are found by name, without importing them: the engine stays below the jobs.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import time
from pathlib import Path

log = logging.getLogger(__name__)

#: every top-level package of the project, bottom layer first
OUR_PACKAGES = (
    "manifests",
    "engine",
    "reports",
    "curation",
    "recaption",
    "video_prep",
    "mixtures",
    "model",
    "vl3data",
)


def package_dirs(names: tuple[str, ...] = OUR_PACKAGES) -> list[str]:
    """The source folders of our packages, for ``py_modules`` (absent ones are skipped)."""
    dirs = []
    for name in names:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            dirs.append(str(Path(next(iter(spec.submodule_search_locations)))))
    return dirs


def runtime_env_for(address: str | None) -> dict | None:
    """What a driver joining ``address`` ships: our packages, unless it runs as a ``ray job``
    whose working_dir already carries them."""
    if not address or os.environ.get("RAY_JOB_ID"):
        return None
    return {"py_modules": package_dirs()}


def init_ray(
    address: str | None = None,
    num_cpus: int | None = None,
    object_store_mb: int | None = None,
    log_level: str = "INFO",
) -> bool:
    """Make sure Ray is up. Returns True if we started it (and so should shut it down).

    Without an address, a ``RAY_ADDRESS`` in the environment (a ``ray job``) is joined. Ray's
    usage statistics probe a cloud metadata address on every start: they stay off.
    """
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    quiet = logging.getLevelName(log_level.upper()) > logging.DEBUG
    t0 = time.perf_counter()
    if address:
        log.info("joining the Ray cluster at %s", address)
        ray.init(
            address=address,
            runtime_env=runtime_env_for(address),
            logging_level=logging.WARNING if quiet else logging.INFO,
            log_to_driver=not quiet,
        )
    else:
        log.info("starting an embedded Ray (num_cpus=%s)", num_cpus or "all")
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        ray.init(
            num_cpus=num_cpus,
            object_store_memory=object_store_mb * 2**20 if object_store_mb else None,
            include_dashboard=False,
            logging_level=logging.WARNING if quiet else logging.INFO,
            log_to_driver=not quiet,
        )
    quiet_ray_data(quiet)
    log.info("Ray up in %.1f s", time.perf_counter() - t0)
    return True


def quiet_ray_data(quiet: bool) -> None:
    """Our progress (inputs/s, partitions done) replaces Ray Data's bars unless debugging."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = not quiet
    ctx.print_on_execution_start = not quiet
    if quiet:  # Ray Data's per-run INFO lines and its "progress bars disabled" warning
        logging.getLogger("ray.data").setLevel(logging.ERROR)
