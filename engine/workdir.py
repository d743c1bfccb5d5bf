"""``OUT/_work/{pass}``: a pass's scored pieces and its per-partition done markers.

A done marker is written last, after everything the partition produced is under its final name;
it carries the partition's metadata (rows, per-stage time, and for a writing pass its shards and
counts), which is all the driver ever reads back to assemble ``dataset.json`` and ``stats.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from manifests.atomic import write_json

PASS_JSON = "pass.json"


def pass_timings(work_root: Path) -> dict[str, dict]:
    """Every pass of a job's work dir that ran in this run: name -> ``pass.json`` (partitions,
    rows, seconds), in the order they finished."""
    found = sorted(Path(work_root).glob(f"*/{PASS_JSON}"), key=lambda p: p.stat().st_mtime_ns)
    return {p.parent.name: json.loads(p.read_text()) for p in found}


@dataclass
class WorkDir:
    root: Path

    def scored(self, partition: int) -> Path:
        return self.root / "scored" / f"p{partition:06d}"

    def done(self, partition: int) -> Path:
        return self.root / "done" / f"p{partition:06d}.json"

    def is_done(self, partition: int) -> bool:
        return self.done(partition).is_file()

    def meta(self, partition: int) -> dict:
        """What the partition's done marker recorded."""
        return json.loads(self.done(partition).read_text())

    def rows(self, partition: int) -> int:
        return self.meta(partition)["rows"]

    def timings(self, partition: int) -> dict[str, float]:
        return self.meta(partition).get("timings_s", {})

    def record_pass(
        self, partitions: int, rows: int, seconds: float, phases: dict[str, dict] | None = None
    ) -> None:
        """How long this run's pass took over the partitions it ran (``pass.json``): the
        stats' ``passes_s`` says where a job's time went. ``phases``: what the driver did
        while Ray started and what Ray's workers did once it was up (``engine.runner``)."""
        doc = {"partitions": partitions, "rows": rows, "seconds": round(seconds, 3)}
        write_json(self.root / PASS_JSON, {**doc, **({"phases": phases} if phases else {})})

    def read_partition(self, partition: int, columns: list[str] | None = None) -> pa.Table | None:
        """All scored rows of a finished partition, in input order (None when it had none)."""
        pieces = sorted(self.scored(partition).glob("*.parquet"))
        if not pieces:
            if self.rows(partition) == 0:
                return None
            raise FileNotFoundError(f"partition {partition} is marked done but has no pieces")
        cols = None
        if columns is not None:  # columns a pass did not write are simply absent
            present = set(pq.read_schema(pieces[0]).names)
            cols = [c for c in dict.fromkeys(["row", *columns]) if c in present]
        t = pa.concat_tables(
            [pq.read_table(p, columns=cols) for p in pieces], promote_options="default"
        )
        return t.sort_by("row")
