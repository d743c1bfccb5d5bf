"""Sources: folders, WebDataset tars (img2dataset layout and hostile tars), URL parquets."""

from __future__ import annotations

import io
import json
import os
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq

from curation.config import InputConfig
from curation.sources import list_partitions, load_partition
from engine.partitions import Partition
from vl3data.sample_media import jpeg_bytes


def rows_of(cfg: InputConfig) -> list[dict]:
    out = []
    for part in list_partitions(cfg):
        out += load_partition(Partition.from_json(part.to_json()), cfg).to_pylist()
    return out


def test_folder_is_walked_recursively_with_sidecars(tmp_path, photos):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "x.jpg").write_bytes(jpeg_bytes(photos["coffee"]))
    (tmp_path / "a" / "b" / "x.txt").write_text("a cup of coffee\n")
    (tmp_path / "a" / "b" / "x.json").write_text('{"license": "cc0"}')
    (tmp_path / "y.PNG").write_bytes(b"")
    (tmp_path / "notes.md").write_text("not an image input")
    cfg = InputConfig(path=str(tmp_path), partition_size=1)
    rows = rows_of(cfg)
    assert [r["source_key"] for r in rows] == ["a/b/x.jpg", "y.PNG"]
    assert [r["partition"] for r in rows] == [0, 1]
    x, y = rows
    assert x["text"] == "a cup of coffee" and json.loads(x["meta"]) == {"license": "cc0"}
    assert x["status"] == "kept" and x["bytes"] == len(x["image"])
    assert (y["status"], y["reason"]) == ("error", "empty_file")
    # ids are stable across listings
    assert [r["id"] for r in rows_of(cfg)] == [r["id"] for r in rows]


def test_folder_refuses_symlinks_out_of_root_and_huge_files(tmp_path, photos):
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(jpeg_bytes(photos["coffee"]))
    root = tmp_path / "pool"
    root.mkdir()
    os.symlink(outside, root / "link.jpg")
    (root / "huge.jpg").write_bytes(jpeg_bytes(photos["astronaut"]))
    rows = {r["source_key"]: r for r in rows_of(InputConfig(path=str(root), max_file_bytes=1000))}
    assert rows["link.jpg"]["reason"] == "outside_root" and rows["link.jpg"]["image"] is None
    assert rows["huge.jpg"]["reason"] == "file_too_large"


def add(tar: tarfile.TarFile, name: str, data: bytes, kind: bytes = tarfile.REGTYPE) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    info.type = kind
    if kind == tarfile.SYMTYPE:
        info.linkname = "/etc/passwd"
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def test_img2dataset_tars_and_hostile_members(tmp_path, photos):
    shard = tmp_path / "tars" / "00000.tar"
    shard.parent.mkdir()
    with tarfile.open(shard, "w") as tar:
        for i, name in enumerate(["coffee", "chelsea"]):
            key = f"0000000{i}"
            add(tar, f"{key}.jpg", jpeg_bytes(photos[name]))
            add(tar, f"{key}.txt", f"alt text {name}".encode())
            add(tar, f"{key}.json", json.dumps({"url": f"http://x/{name}", "key": key}).encode())
        add(tar, "../../evil.jpg", jpeg_bytes(photos["coffee"]))
        add(tar, "link.jpg", b"", tarfile.SYMTYPE)
        add(tar, "onlymeta.json", b"{}")
        add(tar, "webp_sample.webp", b"RIFF\x00\x00\x00\x00WEBPVP8 ")
    rows = rows_of(
        InputConfig(kind="webdataset", path=str(tmp_path / "tars"), max_file_bytes=10_000_000)
    )
    by_key = {r["source_key"].split("#", 1)[1]: r for r in rows}
    assert len(rows) == 6
    assert by_key["00000000"]["text"] == "alt text coffee"
    assert json.loads(by_key["00000001"]["meta"])["url"] == "http://x/chelsea"
    assert by_key["00000000"]["ext"] == "jpg" and by_key["00000000"]["status"] == "kept"
    assert by_key["../../evil"]["reason"] == "unsafe_path"
    assert by_key["link"]["reason"] == "unsafe_member"
    assert by_key["onlymeta"]["reason"] == "no_image_member"
    assert by_key["webp_sample"]["status"] == "kept"  # read now; the decoder judges it


def test_truncated_tar_keeps_what_was_read_and_records_the_break(tmp_path, photos):
    shard = tmp_path / "t.tar"
    with tarfile.open(shard, "w") as tar:
        add(tar, "a.jpg", jpeg_bytes(photos["coffee"]))
        add(tar, "b.jpg", jpeg_bytes(photos["astronaut"]))
    data = shard.read_bytes()
    first = len(jpeg_bytes(photos["coffee"]))
    shard.write_bytes(data[: 512 + first + 512 + 1000])  # cut inside b.jpg
    rows = rows_of(InputConfig(kind="webdataset", path=str(shard)))
    assert rows[0]["status"] == "kept" and rows[0]["source_key"].endswith("#a")
    assert rows[-1]["status"] == "error" and rows[-1]["reason"].startswith("tar_error")


def test_parquet_partitions_carry_extra_columns(tmp_path):
    table = pa.table(
        {
            "url": [f"http://127.0.0.1/{i}.jpg" for i in range(5)] + ["http://127.0.0.1/0.jpg"],
            "text": ["t"] * 6,
            "width": [640, 100, None, 640, 3000, 640],
            "height": [480, 900, 10, 480, 100, 480],
            "clip_sim_coyo": [0.3] * 6,
        }
    )
    path = tmp_path / "coyo.parquet"
    pq.write_table(table, path, row_group_size=4)
    cfg = InputConfig(kind="url_parquet", path=str(path), partition_size=3)
    parts = list_partitions(cfg)
    assert [(p.spec["row_group"], p.spec["offset"], p.spec["length"]) for p in parts] == [
        (0, 0, 3),
        (0, 3, 1),
        (1, 0, 2),
    ]
    rows = rows_of(cfg)
    assert len(rows) == 6 and rows[2]["width"] is None
    assert json.loads(rows[0]["meta"]) == {"clip_sim_coyo": 0.3}
    # the same URL twice is two inputs with two ids
    assert rows[0]["source_key"] == rows[5]["source_key"] and rows[0]["id"] != rows[5]["id"]
