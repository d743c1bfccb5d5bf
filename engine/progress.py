"""Progress of a pass: partitions done of the plan, inputs per second, and an ETA.

Partitions are the unit the driver hears about (it never sees rows), so the bar counts them and
its ETA comes from them; the rate shown is inputs (images, videos) per second, from the rows
each finished partition reports."""

from __future__ import annotations

import logging
import time

from tqdm import tqdm

log = logging.getLogger(__name__)


class Progress:
    def __init__(self, desc: str, partitions: int, *, unit: str = "inputs", enabled: bool = True):
        self.desc, self.unit, self.enabled = desc, unit, enabled
        self.partitions, self.rows, self.done = partitions, 0, 0
        self.t0 = time.perf_counter()
        self.bar = tqdm(total=partitions, desc=desc, unit="part", disable=not enabled)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
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

    def partition_done(self, rows: int) -> None:
        self.rows += rows
        self.done += 1
        self.bar.set_postfix_str(f"{self.rows} {self.unit}, {self.rate:.1f} {self.unit}/s")
        self.bar.update(1)
