"""Applies the pool-wide pre-download decisions (``curation.prefilter``) as a partition loads.

Wraps the source's loader: every row the prefilter dropped is marked (stage ``prefilter``, its
reason naming the column) before any stage runs, so the download stage never requests it, and a
duplicate's ``duplicate_of`` names the ledger id of the copy that was kept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from curation.prefilter import read_range
from engine.partitions import Partition
from manifests.marks import mark, set_column
from manifests.schema import stable_id

STAGE = "prefilter"


@dataclass
class PrefilterMarks:
    """``load(part)``, then the prefilter's decisions for that partition marked on its rows."""

    load: Callable[[Partition], pa.Table]
    work: Path  # the prefilter step's folder (``ranges/``)
    result: dict  # what ``curation.prefilter.prefilter_pool`` returned

    def __call__(self, part: Partition) -> pa.Table:
        rows = self.load(part)
        decisions = self.decisions(part.index)
        dup_of: list[str | None] = [None] * rows.num_rows
        if decisions.num_rows:
            reasons: list[str | None] = [None] * rows.num_rows
            source = rows["source"][0].as_py()
            files, names = self.result["files"], self.result["reasons"]
            for d in decisions.to_pylist():
                i = d["row"]
                reasons[i] = names[d["code"]]
                if d["dup_file"] is not None:
                    name = Path(files[d["dup_file"]]).name
                    dup_of[i] = stable_id(source, f"{name}#{d['dup_row_group']}:{d['dup_offset']}")
            rows = mark(rows, reasons, STAGE)
        return set_column(rows, "duplicate_of", pa.array(dup_of, pa.string()))

    def decisions(self, partition: int) -> pa.Table:
        found = read_range(self.work, self.result, partition)
        return found if found is not None else pa.table({"row": pa.array([], pa.int32())})
