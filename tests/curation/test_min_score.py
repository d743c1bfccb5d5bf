"""A value threshold keeps thumbnails of the rows a user judges it by: the lowest scores and
those just below the line, wherever they sit in the batch (not its first rows)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from curation.stages.thresholds import MinScore
from manifests.schema import DROPPED, KEPT, new_rows
from vl3data.sample_media import jpeg_bytes


def test_thumbnails_go_to_the_lowest_and_the_nearest_below():
    rng = np.random.default_rng(0)
    scores = rng.permutation(np.linspace(0.0, 9.5, 20))  # 0.0, 0.5, ... 9.5, shuffled
    images = [jpeg_bytes(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)) for _ in scores]
    batch = new_rows("folder:/pool", 0, [f"{i}.jpg" for i in range(20)], image=images)
    batch = batch.append_column("aesthetic", pa.array(scores))
    out = MinScore(column="aesthetic", min_value=5.0, thumbs_per_reason=4)(batch)

    status = out["status"].to_pylist()
    assert [s == DROPPED for s in status] == [bool(v < 5.0) for v in scores]
    assert all(s == KEPT for s, v in zip(status, scores, strict=True) if v >= 5.0)
    pictured = sorted(v for v, t in zip(scores, out["thumb"].to_pylist(), strict=True) if t)
    assert pictured == [0.0, 0.5, 4.0, 4.5]  # two lowest, two just below 5.0
    assert set(out["reason"].to_pylist()) == {"aesthetic<5", None}
