"""The `vl3data curate` command line, for tests that must run it in a process of its own
(to kill it, or to point it at another Ray)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest


def curate_cmd(*configs: str, sets: list[str] = (), extra: list[str] = ()) -> list[str]:
    """``python -m vl3data.cli curate CONFIG... --set A=B ... --no-progress EXTRA...``."""
    overrides = [a for s in sets for a in ("--set", s)]
    return [
        sys.executable,
        "-m",
        "vl3data.cli",
        "curate",
        *configs,
        *overrides,
        "--no-progress",
        *extra,
    ]


def video_cmd(*configs: str, sets: list[str] = (), extra: list[str] = ()) -> list[str]:
    """``python -m vl3data.cli video CONFIG... --set A=B ... --no-progress EXTRA...``."""
    return [
        *curate_cmd(*configs, sets=sets, extra=extra)[:3],
        "video",
        *curate_cmd(*configs, sets=sets, extra=extra)[4:],
    ]


def recaption_cmd(*configs: str, sets: list[str] = (), extra: list[str] = ()) -> list[str]:
    """``python -m vl3data.cli recaption CONFIG... --set A=B ... --no-progress EXTRA...``."""
    return [
        *curate_cmd(*configs, sets=sets, extra=extra)[:3],
        "recaption",
        *curate_cmd(*configs, sets=sets, extra=extra)[4:],
    ]


def start_until_done(
    cmd: list[str], done: Path, count: int, timeout_s: float = 120, **popen: Any
) -> subprocess.Popen:
    """``cmd`` started (stdout dropped, stderr kept) and returned once the pass's ``done``
    folder holds ``count`` done markers: the moment a kill -9 test kills it. The test fails if
    the command ended first (with the end of its stderr) or the markers never came.
    ``popen``: more for ``subprocess.Popen`` (``start_new_session=True`` to kill its group)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **popen)
    deadline = time.time() + timeout_s
    while proc.poll() is None and not (done.is_dir() and len(list(done.iterdir())) >= count):
        if time.time() > deadline:
            proc.kill()
            proc.wait()
            pytest.fail(f"no {count} done markers in {done} after {timeout_s:g} s")
        time.sleep(0.02)
    if proc.poll() is not None:
        pytest.fail(f"run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}")
    return proc
