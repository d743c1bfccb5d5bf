"""Starting or joining Ray: embedded in this process by default, or an existing cluster."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def init_ray(
    address: str | None = None,
    num_cpus: int | None = None,
    object_store_mb: int | None = None,
    log_level: str = "INFO",
    py_modules: list | None = None,
) -> bool:
    """Make sure Ray is up. Returns True if we started it (and so should shut it down).

    With an ``address`` our own packages are shipped to the workers (``py_modules``; default:
    the data jobs' packages), so a cluster whose nodes have only the dependencies installed runs
    the same code.
    """
    import ray

    if ray.is_initialized():
        return False
    quiet = logging.getLevelName(log_level.upper()) > logging.DEBUG
    if address:
        if py_modules is None:
            import curation
            import manifests
            import recaption
            import video_prep

            py_modules = [manifests, curation, recaption, video_prep]
        log.info("joining the Ray cluster at %s", address)
        ray.init(
            address=address,
            runtime_env={"py_modules": py_modules},
            logging_level=logging.WARNING if quiet else logging.INFO,
            log_to_driver=not quiet,
        )
    else:
        log.info("starting an embedded Ray (num_cpus=%s)", num_cpus or "all")
        ray.init(
            num_cpus=num_cpus,
            object_store_memory=object_store_mb * 2**20 if object_store_mb else None,
            include_dashboard=False,
            logging_level=logging.WARNING if quiet else logging.INFO,
            log_to_driver=not quiet,
        )
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = not quiet  # ours (partitions done) is shown instead
    ctx.print_on_execution_start = not quiet
    if quiet:  # Ray Data's per-run INFO lines and its "progress bars disabled" warning
        logging.getLogger("ray.data").setLevel(logging.ERROR)
    return True
