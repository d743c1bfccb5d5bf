"""Shape filters: aspect ratio (the paper drops extreme shapes) and minimum side.

Both work from the ``width``/``height`` columns, so the same filter runs twice for URL pools:
once on the sizes the parquet declares, before any download (``prefilter``), and once on the
sizes the decoder found. Rows whose size is unknown pass the prefilter untouched.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from curation.stages.base import BatchFilter
from manifests.marks import alive, set_column


def aspect_ratios(batch: pa.Table) -> np.ndarray:
    """width / height per row, NaN where either is unknown or not positive."""
    w = batch["width"].to_numpy(zero_copy_only=False).astype("float64")
    h = batch["height"].to_numpy(zero_copy_only=False).astype("float64")
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where((w > 0) & (h > 0), w / h, np.nan)
    return r


@dataclass
class ShapeFilter(BatchFilter):
    """Drop rows outside ``[min_aspect, max_aspect]`` (reason ``aspect_ratio``) or with a short
    side below ``min_side`` (reason ``min_side``). Writes the ``aspect_ratio`` score."""

    min_aspect: float = 1 / 3
    max_aspect: float = 3.0
    min_side: int = 64
    name: str = "shape"
    thumbs_per_reason: int = 8

    def __call__(self, batch: pa.Table) -> pa.Table:
        ratio = aspect_ratios(batch)
        batch = set_column(batch, "aspect_ratio", pa.array(ratio, pa.float32(), from_pandas=True))
        return super().__call__(batch)

    def reasons(self, batch: pa.Table) -> list[str | None]:
        ratio = batch["aspect_ratio"].to_numpy(zero_copy_only=False).astype("float64")
        w = batch["width"].to_numpy(zero_copy_only=False).astype("float64")
        h = batch["height"].to_numpy(zero_copy_only=False).astype("float64")
        live = alive(batch)
        out: list[str | None] = []
        for i in range(batch.num_rows):
            if not live[i] or np.isnan(ratio[i]):
                out.append(None)
            elif ratio[i] < self.min_aspect or ratio[i] > self.max_aspect:
                out.append("aspect_ratio")
            elif min(w[i], h[i]) < self.min_side:
                out.append("min_side")
            else:
                out.append(None)
        return out
