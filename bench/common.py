"""What the benchmarks that run whole jobs share: the ``vl3data curate`` command line, a child
environment that keeps everything on this machine, timing and watching a subprocess, counting
the images in WebDataset tars, and the machine's load.

Not a benchmark itself (no ``main``); the ``bench_*.py`` files import it.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff")
# Ray's usage statistics probe a cloud metadata address whenever Ray starts: off, here too (a
# bench that starts Ray in its own process imports this module first)
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # embedded Ray on loopback


def bench_home() -> Path:
    """A HOME for processes that start Ray: ``engine.ray_session.quiet_home``, links to the real
    HOME's entries plus an empty ``ray_bootstrap_config.yaml``, without which Ray 2.60's
    dashboard process asks the cloud metadata services who hosts the machine, whatever
    ``RAY_USAGE_STATS_ENABLED`` says. Nothing of the real HOME is changed."""
    from engine.ray_session import quiet_home

    return quiet_home(Path.home())


def keep_ray_local() -> None:
    """For a bench that starts Ray in its own process: the environment ``child_env`` gives."""
    env = child_env()
    for k in [k for k in os.environ if k not in env]:
        del os.environ[k]
    os.environ.update(env)


def child_env(**extra: str) -> dict[str, str]:
    """The environment of every process a bench starts: no Ray usage statistics nor Ray's cloud
    probe (:func:`bench_home`), no proxy (a proxy would carry loopback requests off the
    machine), no wandb, no update checks."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy")}
    env.update(
        HOME=str(bench_home()),
        RAY_USAGE_STATS_ENABLED="0",
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
        WANDB_MODE="disabled",
        WANDB_SILENT="true",
        NO_ALBUMENTATIONS_UPDATE="1",
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    env.update(extra)
    return env


def curate_cmd(
    overrides: Sequence[str], config: str = "configs/curate_local.yaml", log_level="WARNING"
) -> list[str]:
    """``vl3data curate CONFIG --set ...`` as this interpreter runs it (cwd: the repo root)."""
    cmd = [sys.executable, "-m", "vl3data.cli", "curate", config]
    for o in overrides:
        cmd += ["--set", o]
    return [*cmd, "--no-progress", "--log-level", log_level]


def run_timed(
    cmd: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    watch: Callable[[int], None] | None = None,
    interval: float = 0.1,
) -> dict:
    """Run ``cmd`` (cwd: the repo root) as a whole process and time it, wall clock from start
    to exit. ``watch(pid)`` is called every ``interval`` seconds while it runs (and once more
    when it has exited but is not yet reaped, so its final counters can still be read)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        list(cmd),
        cwd=ROOT,
        env=env if env is not None else child_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out: dict[str, bytes] = {}

    def drain(name: str, stream) -> None:
        out[name] = stream.read()

    readers = [
        threading.Thread(target=drain, args=(n, s), daemon=True)
        for n, s in (("stdout", proc.stdout), ("stderr", proc.stderr))
    ]
    for r in readers:
        r.start()
    while True:
        if watch is not None:
            watch(proc.pid)
        # exited (a zombie, not reaped: /proc/PID still answers) or still running?
        res = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        if res is not None:
            break
        time.sleep(interval)
    wall = time.perf_counter() - t0
    if watch is not None:
        watch(proc.pid)
    proc.wait()
    for r in readers:
        r.join()
    stdout = out.get("stdout", b"").decode(errors="replace")
    stderr = out.get("stderr", b"").decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd[:6])} ... exited {proc.returncode}:\n{stderr[-3000:]}{stdout[-1000:]}"
        )
    return {"wall_s": wall, "stdout": stdout, "stderr": stderr}


def count_tar_images(folder: Path) -> int:
    """Image members in every ``*.tar`` under ``folder`` (read, not trusted from metadata)."""
    n = 0
    for tar in sorted(Path(folder).rglob("*.tar")):
        with tarfile.open(tar) as tf:
            for m in tf:
                if m.isfile() and m.name.rsplit(".", 1)[-1].lower() in IMAGE_EXTS:
                    n += 1
    return n


def loadavg() -> list[float]:
    """The 1, 5 and 15-minute load averages (/proc/loadavg)."""
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))
