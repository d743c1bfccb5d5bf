"""Starting or joining Ray: embedded in this process by default, or an existing cluster.

``OUR_PACKAGES`` is the one list of this project's packages shipped to cluster workers
(``runtime_env.py_modules``), so a cluster whose nodes have only the dependencies installed runs
the same code. They are found by name, without importing them: the engine stays below the jobs.

An embedded Ray sends nothing off this machine. ``RAY_USAGE_STATS_ENABLED=0`` alone is not
enough in Ray 2.60: the dashboard process it starts even with ``include_dashboard=False`` (to
host ``UsageStatsHead``) reads ``~/ray_bootstrap_config.yaml`` and, when that file is missing,
asks the cloud metadata services (HTTP to 169.254.169.254, a DNS lookup of
metadata.google.internal) who hosts the machine, whatever the setting says. So the processes
an embedded Ray starts get a private HOME (``quiet_home``): links to every entry of the real
HOME plus an empty such file, with ``XDG_CACHE_HOME`` kept on the real ``~/.cache``, so model
caches and configs stay where they are. Nothing in the user's HOME is written. (Giving the
workers their real HOME back through ``runtime_env.env_vars`` instead left Ray 2.60 unable to
start a worker here.)
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

from engine.ray_orphans import stop_orphaned_agents

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
    "ingest",
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


RAY_BOOTSTRAP = "ray_bootstrap_config.yaml"


def quiet_home(real: Path | None) -> Path:
    """A private HOME for the processes Ray starts: a link to each entry of ``real`` and an
    empty ``ray_bootstrap_config.yaml``, with which Ray's usage module probes nothing."""
    home = Path(tempfile.gettempdir()) / f"vl3data-ray-home-{os.getuid()}"
    home.mkdir(mode=0o700, exist_ok=True)
    for entry in real.iterdir() if real is not None and real.is_dir() else []:
        link = home / entry.name
        if entry.name != RAY_BOOTSTRAP and not link.exists() and not link.is_symlink():
            link.symlink_to(entry)
    boot = home / RAY_BOOTSTRAP
    if not boot.is_file() or boot.is_symlink():
        boot.unlink(missing_ok=True)
        boot.write_text("{}\n")
    return home


@contextlib.contextmanager
def daemons_home() -> Iterator[None]:
    """HOME is ``quiet_home()`` while Ray starts its processes (they copy this environment, and
    workers inherit theirs); the driver gets its HOME back afterwards."""
    real = os.environ.get("HOME")
    saved = {k: os.environ.get(k) for k in ("HOME", "XDG_CACHE_HOME")}
    if real:
        os.environ.setdefault("XDG_CACHE_HOME", str(Path(real) / ".cache"))
    os.environ["HOME"] = str(quiet_home(Path(real) if real else None))
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def start_embedded(
    num_cpus: int | None = None, object_store_mb: int | None = None, quiet: bool = True
) -> None:
    """``ray.init`` of a Ray in this process that sends nothing off the machine (its addresses
    stay on 127.0.0.1 when RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 was set before ray's import,
    as ``init_ray`` and the CLI do)."""
    import ray

    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    # Ray 2.60 turns token authentication on for a new local cluster, and says so in a WARNING
    # on every start: that default is what we want, so the line is noise in every run's output
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(
        logging.ERROR
    )
    with daemons_home():
        stop_orphaned_agents(Path(os.environ["HOME"]))  # left by a killed earlier run
        ray.init(
            num_cpus=num_cpus,
            object_store_memory=object_store_mb * 2**20 if object_store_mb else None,
            include_dashboard=False,
            logging_level=logging.WARNING if quiet else logging.INFO,
            log_to_driver=not quiet,
        )


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
    background: bool = False,
    driver_works: bool = False,
) -> bool:
    """Make sure Ray is up. Returns True if we started it (and so should shut it down).

    Without an address, a ``RAY_ADDRESS`` in the environment (a ``ray job``) is joined. Ray's
    usage statistics probe a cloud metadata address on every start: they stay off.
    ``background``: an embedded Ray starts in a thread (``engine.ray_start``) and this returns
    at once; whatever needs Ray waits for it with ``engine.ray_start.wait_for_ray``;
    ``driver_works``: passes run partitions in the driver meanwhile.
    """
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    address = address or os.environ.get("RAY_ADDRESS") or None
    if not address:  # read when ray is first imported: an embedded Ray stays on 127.0.0.1
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    from engine import ray_start

    if ray_start.up_here():
        return False  # up, or coming up, for whoever started it
    if background and not address:
        start = partial(_start_logged, num_cpus, object_store_mb, log_level)
        ray_start.begin(start, driver_works)
        return True
    import ray

    if ray.is_initialized():
        return False
    if not address:
        _start_logged(num_cpus, object_store_mb, log_level)
        return True
    quiet = logging.getLevelName(log_level.upper()) > logging.DEBUG
    t0 = time.perf_counter()
    log.info("joining the Ray cluster at %s", address)
    ray.init(
        address=address,
        runtime_env=runtime_env_for(address),
        logging_level=logging.WARNING if quiet else logging.INFO,
        log_to_driver=not quiet,
    )
    log.info("Ray up in %.1f s", time.perf_counter() - t0)
    return True


def _start_logged(num_cpus: int | None, object_store_mb: int | None, log_level: str) -> None:
    quiet = logging.getLevelName(log_level.upper()) > logging.DEBUG
    t0 = time.perf_counter()
    log.info("starting an embedded Ray (num_cpus=%s)", num_cpus or "all")
    start_embedded(num_cpus, object_store_mb, quiet)
    log.info("Ray up in %.1f s", time.perf_counter() - t0)


def quiet_ray_data(quiet: bool) -> None:
    """Our progress (inputs/s, partitions done) replaces Ray Data's bars unless debugging.

    Called where a pass first uses Ray Data (a model pass), not when Ray starts: importing
    ``ray.data`` costs the driver about a second, which a job of partition tasks never needs."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = not quiet
    ctx.print_on_execution_start = not quiet
    if quiet:  # Ray Data's per-run INFO lines and its "progress bars disabled" warning
        logging.getLogger("ray.data").setLevel(logging.ERROR)
