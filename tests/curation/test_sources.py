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


def test_symlink_loops_and_non_utf8_names_cost_one_row_each(tmp_path, photos):
    """A loop of links, or a name that is not UTF-8, used to kill the whole job; now each is
    one row (a loop an error with its reason, a foreign name kept under an escaped key)."""
    root = tmp_path / "pool"
    root.mkdir()
    (root / "good.jpg").write_bytes(jpeg_bytes(photos["coffee"]))
    os.symlink("self.jpg", root / "self.jpg")  # a link to itself
    os.symlink("b.jpg", root / "a.jpg")
    os.symlink("a.jpg", root / "b.jpg")  # a loop of two
    latin1 = os.fsencode(root) + b"/caf\xe9.jpg"  # "café" in Latin-1: not UTF-8
    with open(latin1, "wb") as f:
        f.write(jpeg_bytes(photos["chelsea"]))
    with open(latin1[:-4] + b".txt", "wb") as f:
        f.write(b"a cat in a caf\xe9")
    rows = {r["source_key"]: r for r in rows_of(InputConfig(path=str(root)))}
    assert sorted(rows) == ["a.jpg", "b.jpg", "caf\\xe9.jpg", "good.jpg", "self.jpg"]
    for loop in ("a.jpg", "b.jpg", "self.jpg"):
        assert (rows[loop]["status"], rows[loop]["reason"]) == ("error", "symlink_loop")
    cafe = rows["caf\\xe9.jpg"]
    assert cafe["status"] == "kept" and cafe["image"] == jpeg_bytes(photos["chelsea"])
    assert cafe["text"] == "a cat in a caf\ufffd"
    assert rows["good.jpg"]["status"] == "kept"
    assert len({r["id"] for r in rows.values()}) == 5


def test_tar_members_with_repeated_keys_each_get_a_row_and_a_unique_key(tmp_path, photos):
    """Adjacent repeats used to merge (an image lost); apart, the same key twice in the
    output. Every image member is a row of its own, with its own id."""
    shard = tmp_path / "dups.tar"
    a, b, c = (jpeg_bytes(photos[n]) for n in ("coffee", "chelsea", "astronaut"))
    # GNU format, Latin-1: member names as raw bytes, so "café" arrives as a non-UTF-8 name
    with tarfile.open(shard, "w", format=tarfile.GNU_FORMAT, encoding="latin-1") as tar:
        add(tar, "x.jpg", a)
        add(tar, "x.txt", b"first")
        add(tar, "x.jpg", b)  # adjacent repeat of x.jpg
        add(tar, "y.jpg", c)
        add(tar, "x.jpg", a)  # x again, after y
        add(tar, "caf\u00e9.jpg", b)
    rows = rows_of(InputConfig(kind="webdataset", path=str(shard)))
    keys = [r["source_key"].split("#", 1)[1] for r in rows]
    assert keys == ["x", "x#2", "y", "x#3", "caf\\xe9"]
    assert [r["image"] for r in rows[:4]] == [a, b, c, a]
    assert rows[0]["text"] == "first" and rows[1]["text"] is None
    assert len({r["id"] for r in rows}) == len(rows) == 5
    assert all(r["status"] == "kept" for r in rows)


def test_oversized_or_escaping_sidecars_are_refused_with_a_reason(tmp_path, photos):
    from curation.sources.folder import SIDECAR_MAX_BYTES

    root = tmp_path / "pool"
    root.mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the dataset")
    for name in ("big", "link", "fine"):
        (root / f"{name}.jpg").write_bytes(jpeg_bytes(photos["coffee"]))
    (root / "big.txt").write_bytes(b"x" * (SIDECAR_MAX_BYTES + 1))
    os.symlink(secret, root / "link.txt")
    (root / "fine.txt").write_text("a cup")
    rows = {r["source_key"]: r for r in rows_of(InputConfig(path=str(root)))}
    assert (rows["big.jpg"]["status"], rows["big.jpg"]["reason"]) == ("error", "sidecar_too_large")
    assert (rows["link.jpg"]["reason"], rows["link.jpg"]["text"]) == ("outside_root", None)
    assert rows["fine.jpg"]["status"] == "kept" and rows["fine.jpg"]["text"] == "a cup"

    shard = tmp_path / "t.tar.gz"
    with tarfile.open(shard, "w:gz") as tar:  # 40 MB of text, a few KB once gzipped
        add(tar, "a.jpg", jpeg_bytes(photos["coffee"]))
        add(tar, "a.txt", b"y" * 40_000_000)
        add(tar, "b.jpg", jpeg_bytes(photos["chelsea"]))
        add(tar, "b.json", b'{"caption": "a cat"}')
    assert shard.stat().st_size < 200_000
    rows = rows_of(InputConfig(kind="webdataset", path=str(shard)))
    assert [(r["status"], r["reason"]) for r in rows] == [
        ("error", "sidecar_too_large"),
        ("kept", None),
    ]
    assert rows[0]["text"] is None and rows[1]["text"] == "a cat"


def test_folder_partitions_keep_every_name_and_read_plans_of_name_lists(tmp_path, photos):
    """A partition's names travel as one NUL-joined string (planning 100,000 names raised the
    driver's peak 8.0 MB so, 11.7 MB as lists): names with newlines, spaces and non-ASCII
    characters come back as they were, and a plan written as a list of names still loads."""
    pool = tmp_path / "pool"
    names = ["a b.jpg", "line\nbreak.jpg", "sub/é.jpg", "sub/z.jpg", "x.JPG"]
    for name in names:
        (pool / name).parent.mkdir(parents=True, exist_ok=True)
        (pool / name).write_bytes(jpeg_bytes(photos["coffee"]))
    cfg = InputConfig(path=str(pool), partition_size=2)
    parts = list_partitions(cfg)
    assert [p.inputs() for p in parts] == [2, 2, 1]
    got = [load_partition(Partition.from_json(p.to_json()), cfg) for p in parts]
    keys = [k for t in got for k in t["source_key"].to_pylist()]
    assert keys == sorted(names)
    assert all(t["image"].null_count == 0 for t in got)
    old = Partition(parts[0].index, "folder", {"files": sorted(names)[:2]})
    assert load_partition(old, cfg)["source_key"].to_pylist() == sorted(names)[:2]


def test_a_folder_listed_by_the_local_workers_gives_the_same_plan(tmp_path):
    """With a local pool running, the top folder is read here and its subfolders by the
    workers: the same names in the same partitions as a listing in this process, whatever
    the tree (nested folders, files beside them, a folder named like an image, a link to a
    folder, which is not followed, upper-case and missing extensions)."""
    from engine import local_pool

    pool = tmp_path / "pool"
    names = ["top.jpg", "Z.PNG", "a/1.jpg", "a/b/c/2.webp", "a/b/3.jpg", "dir.jpg/4.jpg"]
    names += [f"m/{i:03d}.jpg" for i in range(40)] + [f"n{k}/x.jpeg" for k in range(7)]
    for name in [*names, "noext", "a/notes.txt", "m/.hidden"]:
        (pool / name).parent.mkdir(parents=True, exist_ok=True)
        (pool / name).write_bytes(b"x")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "out.jpg").write_bytes(b"x")
    os.symlink(tmp_path / "elsewhere", pool / "linked")
    os.symlink(tmp_path / "elsewhere", pool / "linked.jpg")  # a folder, whatever its name
    os.symlink(tmp_path / "elsewhere", pool / "a" / "deeper.png")
    cfg = InputConfig(path=str(pool), partition_size=7)
    here = list_partitions(cfg)
    local_pool.begin(2)
    try:
        there = list_partitions(cfg)
    finally:
        local_pool.end()
    assert [p.to_json() for p in there] == [p.to_json() for p in here]
    listed = [n for p in here for n in p.spec["names"].split("\0")]
    assert listed == sorted(names)  # no link followed, no file without an image extension
