"""Progress of a pass: inputs (images, videos) done of the plan, their rate, and an ETA.

The driver hears about partitions (it never sees rows): each finished partition reports its
rows. When every partition's size is known from the plan (a folder's files, a parquet slice, a
list of videos), the bar counts inputs in the unit the user thinks in; otherwise (tars) it
counts partitions, with the inputs and their rate beside it. On a terminal it is a tqdm bar;
elsewhere (a log file, a CI job, a build node) it is a plain line at most every ``every_s``.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

from tqdm import tqdm

log = logging.getLogger(__name__)


class Progress:
    def __init__(
        self,
        desc: str,
        partitions: int,
        *,
        unit: str = "inputs",
        enabled: bool = True,
        total_inputs: int | None = None,
        every_s: float = 30.0,
        stream: TextIO | None = None,
    ):
        self.desc, self.unit, self.enabled = desc, unit, enabled
        self.partitions, self.rows, self.done = partitions, 0, 0
        self.total_inputs, self.every_s = total_inputs, every_s
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
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()
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
        if self.bar is not None:
            self.bar.set_postfix_str(f"{self.done}/{self.partitions} partitions")
            self.bar.update(rows if self.total_inputs is not None else 1)
        elif self.enabled and time.perf_counter() - self.last_line >= self.every_s:
            self.last_line = time.perf_counter()
            log.info("%s", self.line())
