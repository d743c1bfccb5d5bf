"""The ledger: one row per input, kept or not, with every score computed and where it went.

Parts are ``ledger/part-{partition:06d}.parquet``, one per input partition, so
``sum(rows) == inputs`` and a partition's accounting is in one place.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from manifests.atomic import write_parquet
from manifests.schema import HEAVY_COLUMNS

INTERNAL_PREFIX = "_"


def ledger_dir(out_dir: str | Path) -> Path:
    return Path(out_dir) / "ledger"


def part_path(out_dir: str | Path, partition: int) -> Path:
    return ledger_dir(out_dir) / f"part-{partition:06d}.parquet"


def to_ledger(rows: pa.Table) -> pa.Table:
    """Drop in-flight-only columns (image bytes, internal timings)."""
    keep = [
        c for c in rows.column_names if c not in HEAVY_COLUMNS and not c.startswith(INTERNAL_PREFIX)
    ]
    return rows.select(keep)


def write_part(out_dir: str | Path, partition: int, rows: pa.Table) -> Path:
    path = part_path(out_dir, partition)
    write_parquet(path, to_ledger(rows))
    return path


def read_ledger(out_dir: str | Path, columns: list[str] | None = None) -> pa.Table:
    """The whole ledger (or some columns of it). Parts may differ in score columns: unified."""
    parts = sorted(ledger_dir(out_dir).glob("part-*.parquet"))
    if not parts:
        raise FileNotFoundError(f"no ledger parts in {ledger_dir(out_dir)}")
    tables = []
    for p in parts:
        t = pq.read_table(p)
        if columns is not None:
            t = t.select([c for c in columns if c in t.column_names])
        tables.append(t)
    return pa.concat_tables(tables, promote_options="default")
