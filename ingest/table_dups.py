"""Exact duplicates of a hub table's rows, found without the driver reading a row.

A table row holds its image bytes, and a duplicate may sit in any partition, so finding them
needs one global look. The look is split the engine's way: a pass of partition tasks hashes each
partition's rows where the work is (``_work/digests/p{i}.npy``: one 64-bit digest per row, done
markers for resume), then the driver reads only those digests (8 bytes a row), keeps the first
row of each digest in plan order, and writes each partition's duplicates
(``_work/dups/p{i}.json``: row in partition -> the kept row's key) for the writing pass's loader.
``_work/dups/complete`` is written last: a run killed before it redoes the (cheap) step.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa

from engine.partitions import Partition
from engine.runner import run_partitions
from engine.workdir import WorkDir
from ingest.config import ImportConfig
from ingest.sources import read_slice, row_digest, table_dups_dir, table_row_key
from manifests.atomic import write_bytes, write_json

COMPLETE = "complete"


def _digest_rows(part: Partition, cfg: ImportConfig) -> pa.Table:
    table = read_slice(Path(part.spec["file"]), part.spec["offset"], part.spec["length"])
    digests = [row_digest(row) for row in table.to_pylist()]
    return pa.table({"digest": pa.array(digests, pa.uint64())})


class _DigestSink:
    """Writes a partition's digests as one ``.npy`` (the runner's done marker follows)."""

    def __init__(self, root: Path):
        self.root = root

    def write(self, part: Partition, chunks: Iterator[pa.Table]) -> dict:
        got = [c["digest"].to_numpy() for c in chunks if c.num_rows]
        digests = np.concatenate(got) if got else np.zeros(0, np.uint64)
        buf = io.BytesIO()
        np.save(buf, digests.astype(np.uint64), allow_pickle=False)
        write_bytes(self.root / f"p{part.index:06d}.npy", buf.getvalue())
        return {}


def find_table_duplicates(
    cfg: ImportConfig, parts: list[Partition], work_root: Path, progress: bool
) -> int:
    """Hash every table partition's rows in the workers, then mark duplicates; returns how
    many rows are duplicates. A no-op when the step already completed."""
    out = table_dups_dir(cfg)
    if (out / COMPLETE).is_file():
        return -1
    tables = [p for p in parts if p.kind == "table"]
    work = WorkDir(work_root / "digests")
    run_partitions(
        work,
        tables,
        partial(_digest_rows, cfg=cfg),
        sink=_DigestSink(work.root),
        progress=progress,
        unit="records",
    )
    # read with allow_pickle=False: the files are ours, but never unpickle what is on disk
    digests = [np.load(work.root / f"p{p.index:06d}.npy", allow_pickle=False) for p in tables]
    sizes = np.array([len(d) for d in digests], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    flat = np.concatenate(digests) if digests else np.zeros(0, np.uint64)
    _, first, inverse = np.unique(flat, return_index=True, return_inverse=True)
    kept_at = first[inverse]  # for every row, the global index of its digest's first row
    dup_rows = np.flatnonzero(kept_at != np.arange(len(flat)))
    per_part: dict[int, dict[str, str]] = {}
    for g in dup_rows.tolist():
        pi = int(np.searchsorted(starts, g, side="right") - 1)
        ki = int(np.searchsorted(starts, int(kept_at[g]), side="right") - 1)
        kept = table_row_key(tables[ki].spec, int(kept_at[g] - starts[ki]))
        per_part.setdefault(tables[pi].index, {})[str(g - int(starts[pi]))] = kept
    for index, dups in per_part.items():
        write_json(out / f"p{index:06d}.json", dups)
    write_json(out / COMPLETE, {"duplicates": len(dup_rows), "rows": len(flat)})
    return len(dup_rows)
