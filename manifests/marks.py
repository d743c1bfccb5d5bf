"""Helpers for stages: which rows are still alive, and marking rows dropped with a reason.

A filter never deletes a row. It marks it (status, stage, reason) and releases its image
bytes, so the ledger can account for every input. Only rows that are still ``kept`` are
marked; a row keeps the first reason that dropped it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from manifests.schema import DROPPED, ERROR, KEPT


def alive(batch: pa.Table) -> np.ndarray:
    """Boolean mask of rows no stage has dropped yet."""
    return pc.equal(batch["status"], KEPT).to_numpy(zero_copy_only=False)


def set_column(batch: pa.Table, name: str, values: pa.Array | Sequence) -> pa.Table:
    """Replace (or append) a column, keeping the existing field type when there is one."""
    idx = batch.schema.get_field_index(name)
    if idx >= 0:
        typ = batch.schema.field(idx).type
        arr = values if isinstance(values, pa.Array | pa.ChunkedArray) else pa.array(values, typ)
        if arr.type != typ:
            arr = arr.cast(typ)
        return batch.set_column(idx, batch.schema.field(idx), arr)  # keeps nullability
    arr = values if isinstance(values, pa.Array | pa.ChunkedArray) else pa.array(values)
    return batch.append_column(name, arr)


def mark(
    batch: pa.Table,
    reasons: Sequence[str | None],
    stage: str,
    status: str = DROPPED,
) -> pa.Table:
    """Mark rows whose reason is not None as dropped (or ``error``) by ``stage``.

    ``reasons`` has one entry per row. Rows that are already not kept are left as they are,
    so the first stage that dropped a row is the one the ledger names.
    """
    if status not in (DROPPED, ERROR):
        raise ValueError(f"status must be {DROPPED!r} or {ERROR!r}, got {status!r}")
    if len(reasons) != batch.num_rows:
        raise ValueError(f"{len(reasons)} reasons for {batch.num_rows} rows")
    live = alive(batch)
    hit = np.array([r is not None for r in reasons], dtype=bool) & live
    if not hit.any():
        return batch
    statuses = batch["status"].to_pylist()
    stages = batch["stage"].to_pylist()
    whys = batch["reason"].to_pylist()
    for i in np.flatnonzero(hit):
        statuses[i], stages[i], whys[i] = status, stage, reasons[i]
    batch = set_column(batch, "status", statuses)
    batch = set_column(batch, "stage", stages)
    batch = set_column(batch, "reason", whys)
    if "image" not in batch.column_names:  # a column subset read back for a global step
        return batch
    # release the bytes of every row that is no longer kept
    image = pc.if_else(pa.array(~alive(batch)), pa.scalar(None, pa.binary()), batch["image"])
    return set_column(batch, "image", image)


def errors_to(batch: pa.Table, reasons: Sequence[str | None], stage: str) -> pa.Table:
    """Shorthand for marking rows as ``error`` (input broken) rather than ``dropped`` (filtered)."""
    return mark(batch, reasons, stage, status=ERROR)
