"""Exact duplicates of a hub table's rows are found pool-wide by hashing in the workers: the
plan reads no row (only the files' metadata), the driver only the 8-byte digests."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from ingest.config import ImportConfig
from ingest.sources import list_import_partitions, load_import_partition
from ingest.table_dups import find_table_duplicates
from tests.ingest.inputs import jpeg, turns


def test_duplicate_rows_across_partitions_point_at_the_first(ray_local, photos, tmp_path):
    names = sorted(photos)[:3]
    images = [{"bytes": jpeg(photos[n]), "path": f"{n}.jpg"} for n in names]
    conv = [turns("<image>\nWhat is it?", f"Photo {i}.") for i in range(3)]
    # rows 3 and 5 repeat rows 0 and 1 exactly; row 4 has row 0's image with other words
    images += [images[0], images[0], images[1]]
    conv += [conv[0], turns("<image>\nAnd now?", "Photo 0."), conv[1]]
    path = tmp_path / "train.parquet"
    pq.write_table(pa.table({"image": images, "conversations": conv}), path, row_group_size=2)
    cfg = ImportConfig(output=str(tmp_path / "out"))
    cfg.input.format, cfg.input.annotations, cfg.input.partition_size = "parquet", str(path), 2

    parts = list_import_partitions(cfg)
    assert [set(p.spec) for p in parts] == [{"file", "name", "offset", "length"}] * 3  # no digests
    assert find_table_duplicates(cfg, parts, tmp_path / "out" / "_work", progress=False) == 2
    rows = [r for p in parts for r in load_import_partition(p, cfg).to_pylist()]
    assert [r["duplicate_of"] for r in rows] == [
        None, None, None, "train.parquet#0", None, "train.parquet#1"]  # fmt: skip
    # done once: a rerun of the step reads nothing again
    assert find_table_duplicates(cfg, parts, tmp_path / "out" / "_work", progress=False) == -1
