"""The filter contract: a filter only decides a reason per row; the base does the bookkeeping.

``reasons(batch)`` returns one entry per row, ``None`` to keep. The base marks the rest dropped
(the ledger counts them by stage and reason), releases their bytes, and first keeps a small
thumbnail of a few of them per reason so the report can show people what was dropped.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import pyarrow as pa

from manifests.marks import alive, mark, set_column
from reports.thumbs import make_thumb

#: Longest side of a dropped row's thumbnail (see ``reports.thumbs.make_thumb``).
THUMB_SIDE = 128


def add_thumbs(
    batch: pa.Table,
    reasons: Sequence[str | None],
    per_reason: int,
    order: Sequence[int] | None = None,
) -> pa.Table:
    """Thumbnails for up to ``per_reason`` rows of each drop reason in this batch, taken in
    ``order`` (row indexes; default: row order)."""
    if per_reason <= 0 or "thumb" not in batch.column_names:
        return batch
    live = alive(batch)
    images = batch["image"]
    thumbs = batch["thumb"].to_pylist()
    seen: Counter[str] = Counter()
    changed = False
    for i in range(len(reasons)) if order is None else order:
        reason = reasons[i]
        if reason is None or not live[i] or seen[reason] >= per_reason:
            continue
        data = images[i].as_py()
        if data:
            thumbs[i] = make_thumb(data, THUMB_SIDE)
            seen[reason] += 1
            changed = True
    return set_column(batch, "thumb", thumbs) if changed else batch


class BatchFilter:
    """Base for filters. Subclasses set ``name`` and implement :meth:`reasons`."""

    name: str = "filter"
    thumbs_per_reason: int = 8

    def reasons(self, batch: pa.Table) -> list[str | None]:
        raise NotImplementedError

    def __call__(self, batch: pa.Table) -> pa.Table:
        reasons = self.reasons(batch)
        batch = add_thumbs(batch, reasons, self.thumbs_per_reason)
        return mark(batch, reasons, self.name)
