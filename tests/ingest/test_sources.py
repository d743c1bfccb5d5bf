"""Reading the hub's tables (``ingest.sources``): Parquet, and Arrow in both IPC formats, sliced
across record batches; an image cell that names a file but holds no bytes is refused."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ingest.config import ImportConfig
from ingest.sources import count_records, list_import_partitions, load_import_partition, read_slice


def _table(n: int = 10) -> pa.Table:
    return pa.table({"i": list(range(n)), "conversations": [json.dumps([])] * n})


@pytest.mark.parametrize("kind", ["parquet", "arrow_file", "arrow_stream"])
def test_slices_cross_batches_in_every_table_format(tmp_path, kind):
    t = _table()
    if kind == "parquet":
        path = tmp_path / "t.parquet"
        pq.write_table(t, path, row_group_size=3)
    else:
        path = tmp_path / "t.arrow"
        new = pa.ipc.new_file if kind == "arrow_file" else pa.ipc.new_stream
        with new(str(path), t.schema) as w:
            for b in t.to_batches(max_chunksize=3):
                w.write_batch(b)
    assert read_slice(path, 2, 5)["i"].to_pylist() == [2, 3, 4, 5, 6]
    assert read_slice(path, 8, 5)["i"].to_pylist() == [8, 9]
    cfg = ImportConfig(output=str(tmp_path / "o"))
    cfg.input.format, cfg.input.annotations, cfg.input.partition_size = "parquet", str(path), 4
    assert count_records(cfg) == 10
    parts = list_import_partitions(cfg)
    assert [p.spec["length"] for p in parts] == [4, 4, 2]
    assert load_import_partition(parts[1], cfg)["source_key"].to_pylist() == [
        f"{path.name}#{i}" for i in range(4, 8)
    ]


def test_an_image_cell_without_bytes_is_refused_not_taken_for_text(tmp_path):
    path = tmp_path / "t.parquet"
    cells = [{"bytes": None, "path": "img/1.jpg"}, {"bytes": None, "path": None}]
    conv = [[{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]] * 2
    pq.write_table(pa.table({"image": cells, "conversations": conv}), path)
    cfg = ImportConfig(output=str(tmp_path / "o"))
    cfg.input.format, cfg.input.annotations = "parquet", str(path)
    rows = load_import_partition(list_import_partitions(cfg)[0], cfg).to_pylist()
    assert [r["reason"] for r in rows] == ["bad_image_cell", None]
    assert "image" not in json.loads(rows[1]["_raw"])  # no image at all: a text row


def test_jsonl_lines_keep_their_numbers_across_blank_lines_and_a_bom(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"n": 1}\n\n{"n": 2}\n   \n{"n": 3}\n{"n": 1}\n')
    cfg = ImportConfig(output=str(tmp_path / "o"))
    cfg.input.format, cfg.input.annotations, cfg.input.partition_size = "text", str(path), 2
    parts = list_import_partitions(cfg)
    rows = [r for p in parts for r in load_import_partition(p, cfg).to_pylist()]
    assert [r["source_key"] for r in rows] == ["a.jsonl:1", "a.jsonl:3", "a.jsonl:5", "a.jsonl:6"]
    assert [json.loads(r["_raw"])["n"] for r in rows] == [1, 2, 3, 1]
    assert [r["duplicate_of"] for r in rows] == [None, None, None, "a.jsonl:1"]
