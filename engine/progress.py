"""Progress of a pass: inputs (images, videos) done of the plan, their rate, and an ETA.

The driver hears about partitions (it never sees rows): each finished partition reports its
rows. When every partition's size is known from the plan (a folder's files, a parquet slice, a
list of videos), the bar counts inputs in the unit the user thinks in; otherwise (tars) it
counts partitions, with the inputs and their rate beside it. On a terminal it is a tqdm bar;
elsewhere (a log file, a CI job, a build node) it is a plain line at most every ``every_s``
(default ``VL3DATA_PROGRESS_EVERY_S``, else 30 s).

A process can also keep a *status file* (:func:`status_to`): its latest progress line, or the
phase it is in (:func:`status`: starting Ray, writing the report, a training step), rewritten
at most once a second. A build points each node at one and shows the lines of the nodes that
are running, since a node's own output goes to its log.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import TextIO

from tqdm import tqdm

log = logging.getLogger(__name__)

#: Seconds between plain progress lines where there is no terminal (a log, CI, a build).
EVERY_ENV = "VL3DATA_PROGRESS_EVERY_S"
#: The status file is rewritten at most this often (a forced write, e.g. a phase, always).
STATUS_EVERY_S = 1.0

_status_file: Path | None = None
_status_last = 0.0


def every_s_default() -> float:
    """``VL3DATA_PROGRESS_EVERY_S`` when set to a number, else 30 s."""
    try:
        return max(0.0, float(os.environ.get(EVERY_ENV, "")))
    except ValueError:
        return 30.0


def status_to(path: str | Path | None) -> None:
    """Keep this process's latest progress line in ``path`` (None: stop)."""
    global _status_file, _status_last
    _status_file, _status_last = (Path(path) if path else None), 0.0


def status(text: str, *, say: bool = True, force: bool = True) -> None:
    """What this process is doing now (``curate: writing the report``): logged at INFO when
    ``say``, and written to the status file when one is kept (at most once a second unless
    ``force``)."""
    global _status_last
    if say:
        log.info("%s", text)
    now = time.monotonic()
    if _status_file is None or (not force and now - _status_last < STATUS_EVERY_S):
        return
    _status_last = now
    tmp = _status_file.with_name(f".{_status_file.name}.tmp-{os.getpid()}")
    try:  # no fsync: a status is a courtesy to the watcher, never a reason to fail the job
        tmp.write_text(json.dumps({"t": time.time(), "line": text}))
        os.replace(tmp, _status_file)
    except OSError:
        pass


def read_status(path: str | Path) -> str | None:
    """The line a status file holds, or None when there is none (yet)."""
    try:
        return str(json.loads(Path(path).read_text())["line"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


class Progress:
    def __init__(
        self,
        desc: str,
        partitions: int,
        *,
        unit: str = "inputs",
        enabled: bool = True,
        total_inputs: int | None = None,
        every_s: float | None = None,
        stream: TextIO | None = None,
    ):
        self.desc, self.unit, self.enabled = desc, unit, enabled
        self.partitions, self.rows, self.done = partitions, 0, 0
        self.total_inputs = total_inputs
        self.every_s = every_s_default() if every_s is None else every_s
        self.t0 = self.last_line = time.perf_counter()
        stream = stream if stream is not None else sys.stderr
        self.tty = enabled and hasattr(stream, "isatty") and stream.isatty()
        self.bar = None
        if self.tty:
            by_inputs = total_inputs is not None
            self.bar = tqdm(
                total=total_inputs if by_inputs else partitions,
                desc=desc,
                unit=unit if by_inputs else "part",
                file=stream,
            )

    def __enter__(self) -> Progress:
        status(self.line(), say=False)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()
        status(self.line(), say=False)
        if self.done:
            log.info(
                "%s: %d partitions, %d %s in %.1f s (%.1f %s/s)",
                self.desc,
                self.done,
                self.rows,
                self.unit,
                self.elapsed,
                self.rate,
                self.unit,
            )

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    @property
    def rate(self) -> float:
        return self.rows / self.elapsed if self.elapsed > 0 else 0.0

    def eta_s(self) -> float | None:
        """Seconds left: from inputs when the total is known, else from partitions."""
        if self.total_inputs is not None and self.rows:
            return max(0.0, self.total_inputs - self.rows) / self.rate
        if self.done:
            return (self.partitions - self.done) * self.elapsed / self.done
        return None

    def line(self) -> str:
        """``write: 3/12 partitions, 120/480 images, 35.2 images/s, ETA 10 s``."""
        total = f"/{self.total_inputs}" if self.total_inputs is not None else ""
        eta = self.eta_s()
        return (
            f"{self.desc}: {self.done}/{self.partitions} partitions, {self.rows}{total} "
            f"{self.unit}, {self.rate:.1f} {self.unit}/s"
            + (f", ETA {eta:.0f} s" if eta is not None and self.done < self.partitions else "")
        )

    def partition_done(self, rows: int) -> None:
        self.rows += rows
        self.done += 1
        status(self.line(), say=False, force=False)
        if self.bar is not None:
            self.bar.set_postfix_str(f"{self.done}/{self.partitions} partitions")
            self.bar.update(rows if self.total_inputs is not None else 1)
        elif self.enabled and time.perf_counter() - self.last_line >= self.every_s:
            self.last_line = time.perf_counter()
            log.info("%s", self.line())
