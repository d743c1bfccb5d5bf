"""Histograms of the ledger's score and size columns, kept against not kept, streamed.

Score columns are discovered rather than listed, so a new model stage (aesthetic, CLIP
similarity...) shows up in every report without touching it. The ranges come from the parts'
summaries; the counts are one streamed read, so memory does not grow with the ledger.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from manifests.schema import BASE_SCHEMA, KEPT, LEDGER_WRITE_FIELDS
from reports.ledger_summary import LedgerPart, part_batches, value_ranges

#: Columns that are row bookkeeping, never plotted as scores.
BASE_COLUMNS = frozenset(BASE_SCHEMA.names) | {f.name for f in LEDGER_WRITE_FIELDS}
#: Integer base columns that are still worth a histogram.
SIZE_COLUMNS = ("width", "height", "bytes")
HIST_BINS = 50
#: A positive column spanning at least this ratio (max / min) gets logarithmic bins.
LOG_SPAN = 20.0


def score_columns(schema: pa.Schema) -> list[str]:
    """Every float column a stage added (scores), then the size columns, in schema order."""
    scores = [
        f.name
        for f in schema
        if f.name not in BASE_COLUMNS and (pa.types.is_floating(f.type) or pa.types.is_null(f.type))
    ]
    return scores + [c for c in SIZE_COLUMNS if c in schema.names]


def _as_float(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    if pa.types.is_null(arr.type):
        return np.full(len(arr), np.nan)
    return pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False)


def histograms(parts: Sequence[LedgerPart], columns: list[str]) -> dict[str, dict[str, Any]]:
    """Per column: bin edges, kept and not-kept counts, and whether the bins are logarithmic.

    The bins come from the parts' summaries (each column's finite min and max), the counts from
    one streamed read of the rows. Columns without a single finite value are left out.
    """
    ranges = value_ranges(parts)
    hists: dict[str, dict[str, Any]] = {}
    for col in columns:
        if col not in ranges:  # no finite value anywhere
            continue
        a, b, n = float(ranges[col][0]), float(ranges[col][1]), int(ranges[col][2])
        log = a > 0 and b / a >= LOG_SPAN
        if a == b:
            edges = np.linspace(a - 0.5, b + 0.5, 2) if a == 0 else np.linspace(a * 0.9, b * 1.1, 2)
            edges.sort()
        elif log:
            edges = np.geomspace(a, b, HIST_BINS + 1)
        else:
            edges = np.linspace(a, b, HIST_BINS + 1)
        hists[col] = {
            "edges": edges,
            "kept": np.zeros(len(edges) - 1, dtype=np.int64),
            "other": np.zeros(len(edges) - 1, dtype=np.int64),
            "log": log,
            "n": n,
        }
    if not hists:
        return {}

    wanted = list(hists)
    for batch in part_batches(parts, [*wanted, "status"]):
        kept = pc.fill_null(pc.equal(batch.column("status"), KEPT), False).to_numpy(
            zero_copy_only=False
        )
        for col in wanted:
            h = hists[col]
            v = _as_float(batch.column(col))
            ok = np.isfinite(v)
            h["kept"] += np.histogram(v[ok & kept], h["edges"])[0]
            h["other"] += np.histogram(v[ok & ~kept], h["edges"])[0]
    return hists


def thresholds_for(stats: dict[str, Any], column: str) -> list[float]:
    """stats.json's thresholds for ``column`` as finite floats (one value or a list); junk
    is skipped, since a bad threshold must not cost the histogram."""
    raw = (stats.get("thresholds") or {}).get(column, [])
    if not isinstance(raw, list | tuple):
        raw = [raw]
    out = []
    for t in raw:
        with contextlib.suppress(TypeError, ValueError):
            x = float(t)
            if math.isfinite(x):
                out.append(x)
    return out
