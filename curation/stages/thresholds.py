"""Score thresholds by value, applied inside a pass (a value needs no global view).

Thresholds by quantile ("keep the top 60 %") need every score first: those are global steps
between passes (``curation.selection``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from curation.stages.base import BatchFilter
from manifests.marks import alive


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
