"""The `vl3data curate` command line, for tests that must run it in a process of its own
(to kill it, or to point it at another Ray)."""

from __future__ import annotations

import sys


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
