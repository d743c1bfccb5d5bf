"""Passes and the global steps between them.

A pass maps stages over every partition (the runner). A global step needs every score first
(a top-fraction threshold, k-means) and records its decisions as a *drop list*: a small parquet
of ``id, stage, reason`` under ``_work/drops/``. Drop lists are applied, in order, whenever a
partition is read back: by the next pass's loader and by the final write. Nothing is rewritten.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from engine.partitions import Partition
from engine.workdir import WorkDir
from manifests.atomic import write_parquet
from manifests.marks import alive, mark, set_column
from manifests.schema import HEAVY_COLUMNS

log = logging.getLogger(__name__)


class Drops:
    """The drop lists of one run, applied in the order they were made."""

    def __init__(self, root: Path):
        self.root = root
        self._loaded: dict[str, tuple[str, dict[str, str], dict[str, dict[str, str]]]] = {}

    def __getstate__(self) -> dict:  # ship the path to Ray tasks, not the loaded lists
        return {"root": self.root, "_loaded": {}}

    def _load(self, f: Path) -> tuple[str, dict[str, str], dict[str, dict[str, str]]]:
        """(stage, id -> reason, note column -> id -> value) of one drop list; a note is what
        the ledger keeps beside the reason (``duplicate_of``: the kept copy's id,
        ``eval_match``: the evaluation image). Lists never change once written (temp +
        rename; only --restart removes them), so each is read once, not once per partition."""
        if f.name not in self._loaded:
            t = pq.read_table(f)
            stage = t["stage"][0].as_py() if t.num_rows else ""
            ids, reasons = t["id"].to_pylist(), t["reason"].to_pylist()
            notes = {
                c: dict(zip(ids, t[c].to_pylist(), strict=True))
                for c in t.column_names
                if c not in ("id", "stage", "reason")
            }
            self._loaded[f.name] = (stage, dict(zip(ids, reasons, strict=True)), notes)
        return self._loaded[f.name]

    def files(self) -> list[Path]:
        return sorted(self.root.glob("*.parquet")) if self.root.is_dir() else []

    def exists(self, step: str) -> bool:
        return any(f.stem.split("-", 1)[1] == step for f in self.files())

    def write(
        self,
        step: str,
        ids: Sequence[str],
        stage: str,
        reasons: Sequence[str],
        duplicate_of: Sequence[str] | None = None,
        notes: dict[str, Sequence[str | None]] | None = None,
    ) -> None:
        """``duplicate_of``: for a deduplication step, the id of the copy each row duplicates;
        ``notes``: other string columns the ledger keeps for the rows this list drops."""
        order = len(self.files())
        columns = {
            "id": pa.array(ids, pa.string()),
            "stage": pa.array([stage] * len(ids), pa.string()),
            "reason": pa.array(reasons, pa.string()),
        }
        if duplicate_of is not None:
            columns["duplicate_of"] = pa.array(duplicate_of, pa.string())
        for name, values in (notes or {}).items():
            columns[name] = pa.array(values, pa.string())
        table = pa.table(columns)
        write_parquet(self.root / f"{order:02d}-{step}.parquet", table)

    def apply(self, rows: pa.Table) -> pa.Table:
        ids = rows["id"].to_pylist()
        for f in self.files():
            stage, found, notes = self._load(f)
            if found:
                before = alive(rows)
                rows = mark(rows, [found.get(i) for i in ids], stage)
                for column, values in notes.items():
                    rows = _note(rows, column, ids, before & ~alive(rows), values)
        return rows


def _note(rows: pa.Table, column: str, ids: list[str], marked, values: dict[str, str]):
    """A drop list's note column (``duplicate_of``...), set on the rows it just marked."""
    have = column in rows.column_names
    out = rows[column].to_pylist() if have else [None] * rows.num_rows
    for i in np.flatnonzero(marked).tolist():
        out[i] = values.get(ids[i], out[i])
    return set_column(rows, column, pa.array(out, pa.string()))


#: Heavy columns the first pass writes once; later passes leave them in its pieces.
FIRST_PASS_ONLY = HEAVY_COLUMNS


def read_rows(
    last: WorkDir, base: WorkDir, drops: Drops, part: int, columns: list[str] | None = None
) -> pa.Table | None:
    """A partition as the latest pass left it, with the first pass's heavy columns (image bytes,
    embeddings) attached and every drop list applied. ``columns`` limits what is read."""
    if columns is not None:  # the drop lists need the marking columns
        columns = [*dict.fromkeys(["id", "status", "stage", "reason", *columns])]
    rows = last.read_partition(part, columns)
    if rows is None:
        return None
    if last is not base:
        wanted = [c for c in FIRST_PASS_ONLY if columns is None or c in columns]
        missing = [c for c in wanted if c not in rows.column_names]
        if missing:
            extra = base.read_partition(part, missing)  # same rows, same (row) order
            for c in missing:
                if c in extra.column_names:
                    rows = rows.append_column(c, extra[c])
    rows = drops.apply(rows)
    if "image" in rows.column_names:  # mark() releases bytes only of rows it marks now
        live = pa.array(alive(rows))
        rows = set_column(
            rows, "image", pc.if_else(live, rows["image"], pa.scalar(None, pa.binary()))
        )
    return rows


class LoadPrevious:
    """A later pass's loader: the partition from the previous passes, drops applied."""

    def __init__(self, last: WorkDir, base: WorkDir, drops: Drops):
        self.last, self.base, self.drops = last, base, drops

    def __call__(self, part: Partition) -> pa.Table:
        rows = read_rows(self.last, self.base, self.drops, part.index)
        return rows if rows is not None else pa.table({})


def iter_live(
    last: WorkDir, base: WorkDir, drops: Drops, parts: Sequence[Partition], columns: list[str]
) -> Iterator[pa.Table]:
    """Live rows of every partition, in order, with only ``columns`` (+ id, status)."""
    for p in parts:
        rows = read_rows(last, base, drops, p.index, columns)
        if rows is not None and rows.num_rows:
            yield rows.filter(pa.array(alive(rows)))


def top_fraction(
    last: WorkDir,
    base: WorkDir,
    drops: Drops,
    parts: Sequence[Partition],
    column: str,
    fraction: float,
    stage: str,
) -> float | None:
    """Keep the top ``fraction`` of live rows by ``column``; the rest go to a drop list.

    Rows without a score are kept (nothing to judge them by). Returns the threshold."""
    ids, scores = [], []
    for rows in iter_live(last, base, drops, parts, [column]):
        ids += rows["id"].to_pylist()
        scores.append(rows[column].to_numpy(zero_copy_only=False).astype("float64"))
    if not ids:
        drops.write(f"{column}_top", [], stage, [])
        return None
    s = np.concatenate(scores)
    valid = ~np.isnan(s)
    if not valid.any():
        drops.write(f"{column}_top", [], stage, [])
        return None
    threshold = float(np.quantile(s[valid], 1.0 - fraction, method="lower"))
    out = [i for i, v, ok in zip(ids, s, valid, strict=True) if ok and v < threshold]
    reason = f"{column}<{threshold:.4g}"
    drops.write(f"{column}_top", out, stage, [reason] * len(out))
    log.debug(
        "%s: keep the top %.3g of %d scored rows: threshold %.6g, %d dropped",
        column,
        fraction,
        int(valid.sum()),
        threshold,
        len(out),
    )
    return threshold
