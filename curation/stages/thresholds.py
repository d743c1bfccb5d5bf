"""Score thresholds by value, applied inside a pass (a value needs no global view).

Thresholds by quantile ("keep the top 60 %") need every score first: those are global steps
between passes (``curation.selection``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from curation.stages.base import BatchFilter, add_thumbs
from manifests.marks import alive, mark


def reason_below(column: str, value: float) -> str:
    """The ledger's reason for a score under its threshold, e.g. ``aesthetic<4.5``."""
    return f"{column}<{value:g}"


@dataclass
class MinScore(BatchFilter):
    """Drop live rows whose ``column`` is below ``min_value`` (missing scores pass)."""

    column: str = "aesthetic"
    min_value: float = 0.0
    name: str = "aesthetic"
    thumbs_per_reason: int = 8

    def reasons(self, batch: pa.Table) -> list[str | None]:
        scores = batch[self.column].to_numpy(zero_copy_only=False).astype("float64")
        live = alive(batch)
        why = reason_below(self.column, self.min_value)
        return [
            why if live[i] and not np.isnan(s) and s < self.min_value else None
            for i, s in enumerate(scores)
        ]

    def __call__(self, batch: pa.Table) -> pa.Table:
        """As every filter, but the thumbnails kept are of the rows a user judges a threshold
        by: half the lowest scores, half those just below the threshold (the report shows them
        beside the lowest kept ones), not the first rows of the batch."""
        reasons = self.reasons(batch)
        scores = batch[self.column].to_numpy(zero_copy_only=False).astype("float64")
        below = [i for i, r in enumerate(reasons) if r is not None]
        below.sort(key=lambda i: (scores[i], i))
        half = max(1, self.thumbs_per_reason // 2)
        order = list(dict.fromkeys(below[:half] + below[::-1]))  # lowest, then nearest the line
        batch = add_thumbs(batch, reasons, self.thumbs_per_reason, order)
        return mark(batch, reasons, self.name)
