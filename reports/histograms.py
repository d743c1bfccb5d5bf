"""Histograms of the ledger's score and size columns, kept against not kept, from the footers.

Score columns are discovered rather than listed (:func:`manifests.ledger.score_columns`), so a
new model stage (aesthetic, CLIP similarity...) shows up in every report without touching it.
Each part's worker counted them on a grid all parts share
(:mod:`manifests.grid_histogram`): the report adds those counts up and reads no row.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

from manifests.grid_histogram import drawable
from reports.ledger_summary import LedgerFooters

#: A positive column spanning at least this ratio (max / min) gets logarithmic bins.
LOG_SPAN = 20.0


def histograms(footers: LedgerFooters, columns: list[str]) -> dict[str, dict[str, Any]]:
    """Per column: bin edges, kept and not-kept counts, whether the bins are logarithmic, and
    how many values were counted. Columns without a single finite value are left out."""
    hists: dict[str, dict[str, Any]] = {}
    for col in columns:
        grids = footers.grids.get(col)
        if grids is None:  # no finite value anywhere
            continue
        lo, hi, n = footers.ranges[col]
        log = "log" in grids and lo > 0 and hi / lo >= LOG_SPAN
        h = drawable(grids["log" if log else "lin"])
        hists[col] = {
            "edges": h.edges(log),
            "kept": h.kept,
            "other": h.other,
            "log": log,
            "n": n,
        }
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
