"""Our shards are real WebDataset: rotation, reproducible bytes, read back by webdataset and Ray."""

from __future__ import annotations

import json

import webdataset as wds

from manifests.dataset import read_dataset_json, shard_paths, write_dataset_json
from manifests.shards import ShardSetWriter, iter_samples
from vl3data.sample_media import jpeg_bytes


def write_set(out, photos, max_count=3, max_bytes=10**9):
    w = ShardSetWriter(out, "images", max_count=max_count, max_bytes=max_bytes)
    placed = []
    for i, (name, arr) in enumerate(sorted(photos.items())):
        rec = {"image": [f"k{i:04d}.jpg"], "name": name}
        placed.append(
            w.write(
                {"__key__": f"k{i:04d}", "jpg": jpeg_bytes(arr), "json": json.dumps(rec).encode()}
            )
        )
    return placed, w.close()


def test_rotation_by_count_and_by_size(tmp_path, photos):
    n = len(photos)
    placed, shards = write_set(tmp_path / "a", photos, max_count=3)
    assert [s["samples"] for s in shards] == [3] * (n // 3) + ([n % 3] if n % 3 else [])
    assert placed[0] == placed[2] == "shards/images-000000.tar" != placed[3]
    _, by_size = write_set(tmp_path / "b", photos, max_count=1000, max_bytes=60_000)
    assert len(by_size) > 1 and sum(s["samples"] for s in by_size) == n
    assert not list((tmp_path / "a" / "shards").glob("*.tmp"))


def test_same_samples_give_byte_identical_tars(tmp_path, photos):
    _, a = write_set(tmp_path / "a", photos)
    _, b = write_set(tmp_path / "b", photos)
    assert a == b
    for s in a:
        assert (tmp_path / "a" / s["path"]).read_bytes() == (
            tmp_path / "b" / s["path"]
        ).read_bytes()


def test_read_back_with_webdataset_and_ray(tmp_path, photos, ray_local):
    out = tmp_path / "set"
    _, shards = write_set(out, photos)
    write_dataset_json(
        out, name="t", modality="image", task="test", shards=shards, config={}, config_hash="x"
    )
    assert read_dataset_json(out)["samples"] == len(photos)
    paths = [str(p) for p in shard_paths(out)]
    decoded = list(wds.WebDataset(paths, shardshuffle=False).decode("pil"))
    assert [d["__key__"] for d in decoded] == [f"k{i:04d}" for i in range(len(photos))]
    for d, name in zip(decoded, sorted(photos), strict=True):
        assert d["jpg"].size == photos[name].shape[1::-1] and d["json"]["name"] == name
    assert len(list(iter_samples(paths))) == len(photos)
    rows = ray_local.data.read_webdataset(paths).take_all()
    assert sorted(r["__key__"] for r in rows) == [f"k{i:04d}" for i in range(len(photos))]


def test_split_key_is_webdatasets_rule():
    """Our tar reader groups members exactly as webdataset does (without importing it)."""
    from webdataset.tariterators import base_plus_ext

    from manifests.shards import split_key

    names = [
        "abc.jpg",
        "abc.f0001.jpg",
        "dir/sub/abc.json",
        "dir.v2/abc.tar.gz",
        "noext",
        ".hidden",
        "a..b",
        "dir/.x.jpg",
        "ÄÖ/ü.PNG",
        "x/y.",
    ]
    assert [split_key(n) for n in names] == [base_plus_ext(n) for n in names]


def test_our_tars_are_byte_for_byte_webdatasets(tmp_path):
    """ShardSetWriter writes with tarfile (no torch import in workers); the bytes are exactly
    what webdataset's ShardWriter writes with the same settings, rotation included."""
    import webdataset as wds

    from manifests.shards import FIXED_MTIME, ShardSetWriter

    samples = [
        {"__key__": f"k{i:03d}", "jpg": bytes([i]) * (100 + 37 * i), "json": b'{"i": %d}' % i}
        for i in range(23)
    ] + [{"__key__": "vid", "f0000.jpg": b"a" * 700, "f0001.jpg": b"b" * 5, "json": b"{}"}]
    ours = ShardSetWriter(tmp_path / "ours", "images", max_count=5, max_bytes=2048)
    for s in samples:
        ours.write(s)
    written = ours.close()
    theirs_dir = tmp_path / "theirs"
    theirs_dir.mkdir()
    with wds.ShardWriter(
        str(theirs_dir / "images-%06d.tar"),
        maxcount=5,
        maxsize=2048,
        encoder=False,
        mtime=FIXED_MTIME,
        user="vl3data",
        group="vl3data",
        mode=0o444,
        verbose=0,
    ) as w:
        for s in samples:
            w.write(s)
    theirs = sorted(theirs_dir.glob("*.tar"))
    assert len(written) == len(theirs) > 2
    for entry, path in zip(written, theirs, strict=True):
        assert (tmp_path / "ours" / entry["path"]).read_bytes() == path.read_bytes()
