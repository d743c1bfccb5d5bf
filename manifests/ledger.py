"""The ledger: one row per input, kept or not, with every score computed and where it went.

Parts are ``ledger/part-{partition:06d}.parquet``, one per input partition, so
``sum(rows) == inputs`` and a partition's accounting is in one place.

Each part carries its own summary in its parquet footer (:data:`SUMMARY_KEY`, see
:func:`part_summary`): the worker that wrote the part counted it while the rows were in its
memory, so a report adds up a few numbers per part instead of scanning every row on the driver.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from manifests.atomic import write_parquet
from manifests.grid_histogram import GridHistogram, column_grids
from manifests.schema import BASE_SCHEMA, HEAVY_COLUMNS, KEPT, LEDGER_WRITE_FIELDS

INTERNAL_PREFIX = "_"
#: The footer key of a part's summary (JSON, :func:`part_summary`).
SUMMARY_KEY = b"vl3data.summary"
#: The columns a summary is computed from, besides the numeric ones.
SUMMARY_COLUMNS = ("status", "stage", "reason", "thumb")
#: Columns that are row bookkeeping, never plotted as scores.
BASE_COLUMNS = frozenset(BASE_SCHEMA.names) | {f.name for f in LEDGER_WRITE_FIELDS}
#: Integer base columns that are still worth a histogram.
SIZE_COLUMNS = ("width", "height", "bytes")


def score_columns(schema: pa.Schema) -> list[str]:
    """The columns a report plots: every float column a stage added (scores: discovered, so a
    new model stage shows up without touching the report), then the size columns, in schema
    order."""
    scores = [
        f.name
        for f in schema
        if f.name not in BASE_COLUMNS and (pa.types.is_floating(f.type) or pa.types.is_null(f.type))
    ]
    return scores + [c for c in SIZE_COLUMNS if c in schema.names]


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


def part_summary(table: pa.Table) -> dict[str, Any]:
    """What a report needs of one part without reading its rows again::

        {"counts": [[status, stage, reason, n], ...],   # in the order first seen
         "ranges": {column: [min, max, n]},              # finite values of each numeric column
         "thumbs": {reason: n},                          # not-kept rows holding a thumbnail
         "grids": {column: {"lin": grid, "log": grid}}}  # kept / not-kept counts of each
                                                         # plotted column, on the shared grid

    Counts keep the part's encounter order, so parts added up in partition order give the
    whole ledger's "first seen" order. A column with no finite value has no range and no
    grid; ``log`` (over log2 of the values) only where every finite value is positive
    (:func:`manifests.grid_histogram.column_grids`).
    """
    n = table.num_rows
    cols = {
        c: table.column(c) if c in table.column_names else pa.nulls(n, pa.string())
        for c in ("status", "stage", "reason")
    }
    keys = pa.table(cols)
    grouped = keys.group_by(list(cols), use_threads=False).aggregate([([], "count_all")])
    counts = [[r["status"], r["stage"], r["reason"], r["count_all"]] for r in grouped.to_pylist()]
    ranges: dict[str, list] = {}
    for field in table.schema:
        t = field.type
        if not (pa.types.is_floating(t) or pa.types.is_integer(t)):
            continue
        col = table.column(field.name)
        vals = pc.filter(col, pc.is_finite(col)) if pa.types.is_floating(t) else col.drop_null()
        if len(vals):
            mm = pc.min_max(vals)
            ranges[field.name] = [mm["min"].as_py(), mm["max"].as_py(), len(vals)]
    thumbs: dict[str, int] = {}
    if "thumb" in table.column_names:
        mine = pc.and_(
            pc.is_valid(table.column("thumb")),
            pc.fill_null(pc.not_equal(cols["status"], KEPT), True),
        )
        for reason in pc.filter(cols["reason"], mine).to_pylist():
            thumbs[reason or ""] = thumbs.get(reason or "", 0) + 1
    kept = pc.fill_null(pc.equal(cols["status"], KEPT), False).to_numpy(zero_copy_only=False)
    grids: dict[str, dict] = {}
    for col in score_columns(table.schema):
        if col in ranges:  # a finite value to count
            values = pc.cast(table.column(col), pa.float64()).to_numpy(zero_copy_only=False)
            grids[col] = {k: g.to_json() for k, g in column_grids(values, kept).items()}
    return {"counts": counts, "ranges": ranges, "thumbs": thumbs, "grids": grids}


def read_summary(path: Path, schema: pa.Schema | None = None) -> dict[str, Any]:
    """A part's summary, its grids parsed (:class:`GridHistogram`): from its footer, or counted
    from the columns it is made of when the footer has none (a part written before parts had
    one, or before they had grids) or one that is not a summary (a damaged or hand-made file:
    the report must still come out, with true counts)."""
    schema = schema if schema is not None else pq.read_schema(path)
    raw = (schema.metadata or {}).get(SUMMARY_KEY)
    if raw is not None:
        try:
            summary = _checked(json.loads(raw))
        except ValueError:  # not JSON, or a grid that is not one
            summary = None
        if summary is not None:
            return summary
    names = [
        f.name
        for f in schema
        if f.name in SUMMARY_COLUMNS or pa.types.is_floating(f.type) or pa.types.is_integer(f.type)
    ]
    summary = _checked(part_summary(pq.read_table(path, columns=names)))
    assert summary is not None, "part_summary gave a summary _checked refuses"
    return summary


def _checked(s: Any) -> dict[str, Any] | None:
    """``s`` with its grids parsed if it has the shape :func:`part_summary` gives (what a report
    relies on), else None; ValueError for a grid that is not one."""
    if not isinstance(s, dict) or set(s) != {"counts", "ranges", "thumbs", "grids"}:
        return None
    counts, ranges, thumbs, grids = s["counts"], s["ranges"], s["thumbs"], s["grids"]
    ok = (
        isinstance(counts, list)
        and all(
            isinstance(c, list)
            and len(c) == 4
            and all(v is None or isinstance(v, str) for v in c[:3])
            and type(c[3]) is int
            for c in counts
        )
        and isinstance(ranges, dict)
        and all(
            isinstance(r, list)
            and len(r) == 3
            and all(
                isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
                for v in r
            )
            and type(r[2]) is int
            and r[2] >= 1  # part_summary leaves out a column with no finite value
            for r in ranges.values()
        )
        and isinstance(thumbs, dict)
        and all(type(n) is int for n in thumbs.values())
        and isinstance(grids, dict)
        # a grid per ranged column at most, with a log form exactly when all values are > 0
        and all(
            isinstance(g, dict)
            and col in ranges
            and set(g) == ({"lin", "log"} if ranges[col][0] > 0 else {"lin"})
            for col, g in grids.items()
        )
    )
    if not ok:
        return None
    parsed = {
        col: {k: GridHistogram.from_json(grid) for k, grid in g.items()} for col, g in grids.items()
    }
    return {**s, "grids": parsed}


def without_summary(metadata: dict[bytes, bytes] | None) -> dict[bytes, bytes] | None:
    """A part's schema metadata less its summary: what a reader of several parts may keep
    (one part's summary is not the ledger's)."""
    return {k: v for k, v in (metadata or {}).items() if k != SUMMARY_KEY} or None


def write_part(out_dir: str | Path, partition: int, rows: pa.Table) -> Path:
    path = part_path(out_dir, partition)
    table = to_ledger(rows)
    meta = {**(table.schema.metadata or {}), SUMMARY_KEY: json.dumps(part_summary(table))}
    write_parquet(path, table.replace_schema_metadata(meta))
    return path


def read_ledger(out_dir: str | Path, columns: list[str] | None = None) -> pa.Table:
    """The whole ledger (or some columns of it). Parts may differ in score columns: unified."""
    parts = sorted(ledger_dir(out_dir).glob("part-*.parquet"))
    if not parts:
        raise FileNotFoundError(f"no ledger parts in {ledger_dir(out_dir)}")
    tables = []
    for p in parts:
        t = pq.read_table(p)
        t = t.replace_schema_metadata(without_summary(t.schema.metadata))
        if columns is not None:
            t = t.select([c for c in columns if c in t.column_names])
        tables.append(t)
    return pa.concat_tables(tables, promote_options="default")
