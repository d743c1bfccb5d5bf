"""Ray agents left behind by a killed driver, found and stopped at the next start.

When the driver of an embedded Ray is killed (``kill -9``, OOM), its raylet and GCS go with it,
but the dashboard and runtime-env agents (``ray::DashboardAgent``, ``ray::RuntimeEnvAgent``)
are re-parented to init and linger for a minute or more, holding memory and ports. Ours are
recognisable: every process our embedded Ray starts has the private HOME of
:func:`engine.ray_session.quiet_home`. An agent with that HOME whose parent is init has lost
its raylet (a live one is the raylet's child), so stopping it cannot disturb a running job.
Linux only (``/proc``); elsewhere nothing is found.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from pathlib import Path

log = logging.getLogger(__name__)

AGENTS = (b"ray::DashboardAgent", b"ray::RuntimeEnvAgent")


def _parent(pid: str) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])  # after "pid (comm)": state, ppid, ...


def orphaned_agents(home: Path) -> list[int]:
    """PIDs of this user's Ray agents started with ``home`` as HOME whose parent is init."""
    mark = b"HOME=" + os.fsencode(home)
    found = []
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else []:
        pid = entry.name
        if not pid.isdigit():
            continue
        try:
            if entry.stat().st_uid != os.getuid():
                continue
            cmdline = (entry / "cmdline").read_bytes()
            if not cmdline.startswith(AGENTS):
                continue
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if mark in environ and _parent(pid) == 1:
            found.append(int(pid))
    return found


def stop_orphaned_agents(home: Path, grace_s: float = 5.0) -> list[int]:
    """SIGTERM the orphaned agents, SIGKILL any still there after ``grace_s``; their PIDs."""
    pids = orphaned_agents(home)
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    for pid in pids:
        if _alive(pid):
            _signal(pid, signal.SIGKILL)
    if pids:
        log.info("stopped %d Ray agent(s) left by a killed run: pids %s", len(pids), pids)
    return pids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    state = Path(f"/proc/{pid}/stat")
    try:
        return state.read_text().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is gone
    except OSError:
        return False


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)
