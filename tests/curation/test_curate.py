"""The curate job end to end on the demo pool: every input in the ledger once, real shards."""

from __future__ import annotations

import json
from collections import Counter

import pyarrow.parquet as pq
import pytest
import webdataset as wds

from curation.config import CurateConfig
from curation.curate import curate
from manifests.configs import load_config
from manifests.dataset import shard_paths
from manifests.ledger import read_ledger


def make_cfg(pool, out, *extra):
    return load_config(
        CurateConfig,
        "configs/curate_local.yaml",
        [f"input.path={pool}", f"output={out}", "input.partition_size=5", *extra],
    )


def test_demo_pool_end_to_end(tmp_path, demo_pool, ray_local):
    pool, expected = demo_pool
    out = tmp_path / "out"
    doc = curate(make_cfg(pool, out), progress=False)

    ledger = read_ledger(out).to_pylist()
    assert sorted(r["source_key"] for r in ledger) == sorted(expected)  # each input exactly once
    for r in ledger:
        assert (r["status"], r["reason"]) == expected[r["source_key"]], r["source_key"]
    kept = [r for r in ledger if r["status"] == "kept"]
    assert all(r["shard"] and r["key"] == r["id"] for r in kept)
    assert all(r["shard"] is None for r in ledger if r["status"] != "kept")
    assert "image" not in pq.read_schema(next((out / "ledger").glob("*.parquet"))).names

    assert doc["samples"] == len(kept) == sum(s["samples"] for s in doc["shards"])
    assert doc["modality"] == "image" and doc["config"]["input"]["path"] == str(pool)
    samples = list(
        wds.WebDataset([str(p) for p in shard_paths(out)], shardshuffle=False).decode("pil")
    )
    assert sorted(s["__key__"] for s in samples) == sorted(r["key"] for r in kept)
    by_key = {r["key"]: r for r in kept}
    for s in samples:
        image = s.get("jpg") or s.get("png") or s.get("webp")
        row = by_key[s["__key__"]]
        assert image.size == (row["width"], row["height"])
        rec = s["json"]
        assert rec["image"][0].startswith(s["__key__"] + ".")
        if row["text"]:
            assert rec["conversations"][1]["value"] == row["text"]
            assert rec["conversations"][0]["value"].startswith("<image>\n")

    stats = json.loads((out / "stats.json").read_text())
    counts = Counter(r["status"] for r in ledger)
    assert (stats["inputs"], stats["kept"], stats["dropped"], stats["error"]) == (
        len(expected),
        counts["kept"],
        counts["dropped"],
        counts["error"],
    )
    assert {"probe", "shape", "decode"} <= set(stats["timings_s"])
    assert (out / "report.html").stat().st_size > 10_000
    assert not (out / "_work").exists()

    from vl3data.cli import main

    (out / "report.html").unlink()
    assert main(["report", str(out)]) == 0
    assert "too_many_pixels" in (out / "report.html").read_text()


def test_rerun_is_a_no_op_and_another_config_is_refused(tmp_path, demo_pool, ray_local):
    pool, _ = demo_pool
    out = tmp_path / "out"
    first = curate(make_cfg(pool, out), progress=False)
    assert "dataset.json is missing" not in (out / "report.html").read_text()
    (out / "report.html").unlink()  # a crash between dataset.json and the report
    again = curate(make_cfg(pool, out), progress=False)
    assert again == first
    assert (out / "report.html").is_file()
    with pytest.raises(RuntimeError, match="another config"):
        curate(make_cfg(pool, out, "filters.min_side=10"), progress=False)
    rebuilt = curate(make_cfg(pool, out, "filters.min_side=10"), restart=True, progress=False)
    kept = {r["source_key"] for r in read_ledger(out).to_pylist() if r["status"] == "kept"}
    assert "crops/rocket_tiny.jpg" in kept and rebuilt["samples"] == first["samples"] + 1


def test_webdataset_input_round_trip(tmp_path, demo_pool, ray_local):
    """Our own output is a valid input: curating the curated shards keeps every sample."""
    pool, _ = demo_pool
    first = curate(make_cfg(pool, tmp_path / "a"), progress=False)
    second = curate(
        make_cfg(tmp_path / "a" / "shards", tmp_path / "b", "input.kind=webdataset"), progress=False
    )
    assert second["samples"] == first["samples"]
    texts = {r["text"] for r in read_ledger(tmp_path / "b").to_pylist()}
    assert "a photo: astronaut" in texts  # the alt-text travels through our json member
