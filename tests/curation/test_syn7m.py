"""VL3-Syn7M filtering end to end: first stage, CLIP once, aesthetic, BLIP-2 + similarity,
k-means balancing, with tiny models of the real classes and the real LAION head."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import webdataset as wds

from curation.clustering import select_from_tree, upper_levels
from curation.config import CurateConfig
from curation.curate import curate
from manifests.configs import load_config
from manifests.dataset import shard_paths
from manifests.ledger import read_ledger

CONFIGS = ["configs/syn7m_filters.yaml", "configs/models/tiny.yaml"]


def syn7m_cfg(pool, out, models, weights, *extra):
    return load_config(
        CurateConfig,
        CONFIGS,
        [
            f"input.path={pool}",
            f"output={out}",
            f"clip.model=local-dir:{models / 'open_clip'}",
            f"caption.model={models / 'blip2'}",
            f"aesthetic.weights={weights}",
            *extra,
        ],
    )


def test_syn7m_pipeline_end_to_end(tmp_path, demo_pool, tiny_models, aesthetic_weights, ray_local):
    pool, expected = demo_pool
    out = tmp_path / "out"
    doc = curate(syn7m_cfg(pool, out, tiny_models, aesthetic_weights), progress=False)
    rows = read_ledger(out).to_pylist()
    assert len(rows) == len(expected)  # every input, once
    by_key = {r["source_key"]: r for r in rows}
    for key, (status, reason) in expected.items():  # the first stage decides as before
        if status != "kept":
            assert (by_key[key]["status"], by_key[key]["reason"]) == (status, reason), key

    first_stage_kept = [r for r in rows if expected[r["source_key"]][0] == "kept"]
    # every image that reached CLIP has exactly one embedding, stored beside the ledger
    embs = {p.name: np.load(p) for p in (out / "embeddings").glob("part-*.npy")}
    assert all(r["embedding_row"] is not None for r in first_stage_kept)
    assert sum(len(e) for e in embs.values()) == len(first_stage_kept)
    for e in embs.values():
        assert e.dtype == np.float16 and e.shape[1] == 768

    stats = json.loads((out / "stats.json").read_text())
    a_thr = stats["thresholds"]["aesthetic"][0]
    s_thr = stats["thresholds"]["clip_sim"][0]
    reasons = Counter((r["stage"], r["reason"]) for r in rows if r["status"] == "dropped")
    assert any(stage == "aesthetic" for stage, _ in reasons)
    for r in first_stage_kept:
        assert r["aesthetic"] is not None
        if r["stage"] == "aesthetic":
            assert r["aesthetic"] < a_thr and r["reason"] == f"aesthetic<{a_thr:.4g}"
            assert r["coarse_caption"] is None  # dropped before captioning: never captioned
        else:
            assert r["aesthetic"] >= a_thr and r["coarse_caption"] is not None
            assert r["clip_sim"] is not None
            assert (r["clip_sim_alt"] is not None) == bool(r["text"])  # alt-text where any
            if r["stage"] == "clip_sim":
                assert r["clip_sim"] < s_thr
            else:
                assert r["clip_sim"] >= s_thr and r["cluster"] is not None

    # balanced selection: every cluster capped at per_cluster, small ones kept whole
    clusters = stats["clusters"]
    kept = [r for r in rows if r["status"] == "kept"]
    assert all(n <= 3 for n in clusters["sizes_after"])
    assert clusters["sizes_after"] == [
        sum(1 for r in kept if r["cluster"] == c) for c in range(clusters["k"])
    ]
    assert clusters["sizes_before"] == [
        sum(1 for r in rows if r["cluster"] == c) for c in range(clusters["k"])
    ]
    for before, after in zip(clusters["sizes_before"], clusters["sizes_after"], strict=True):
        assert after == min(before, 3)
    assert all(r["reason"] == "cluster_quota" for r in rows if r["stage"] == "cluster")
    assert np.load(out / "clusters" / "centroids.npy").shape == (clusters["k"], 768)

    # the shards hold exactly the kept rows, with their scores in the record
    samples = list(wds.WebDataset([str(p) for p in shard_paths(out)], shardshuffle=False))
    assert doc["samples"] == len(kept) == len(samples)
    rec = json.loads(samples[0]["json"])
    assert {"aesthetic", "clip_sim", "coarse_caption", "cluster"} <= rec.keys()
    assert "clip_embedding" not in rec


@pytest.mark.slow  # 48 s: make test stood at 9.1 of its 10 minutes; test_resume.py covers resume
def test_syn7m_is_deterministic_and_resumable(
    tmp_path, demo_pool, tiny_models, aesthetic_weights, ray_local
):
    """Same inputs and config, same shard set; a run that stopped after the first pass and
    its global step finishes with the same result."""
    pool, _ = demo_pool
    a = curate(syn7m_cfg(pool, tmp_path / "a", tiny_models, aesthetic_weights), progress=False)
    cfg_b = syn7m_cfg(pool, tmp_path / "b", tiny_models, aesthetic_weights, "keep_work=true")
    b = curate(cfg_b, progress=False)
    # simulate a crash after the aesthetic step: remove everything downstream of it
    work = tmp_path / "b" / "_work"
    import shutil

    shutil.rmtree(work / "caption")
    for f in (work / "drops").glob("*-c*.parquet"):  # clip_sim_top, cluster
        f.unlink()
    (work / "clusters.parquet").unlink()
    state = json.loads((work / "global.json").read_text())
    state["done"] = ["aesthetic_top"]
    (work / "global.json").write_text(json.dumps(state))
    (tmp_path / "b" / "dataset.json").unlink()
    c = curate(cfg_b, progress=False)
    for doc in (b, c):
        assert doc["samples"] == a["samples"]
        assert [s["samples"] for s in doc["shards"]] == [s["samples"] for s in a["shards"]]
    for s in a["shards"]:
        assert (tmp_path / "a" / s["path"]).read_bytes() == (
            tmp_path / "b" / s["path"]
        ).read_bytes()


@pytest.mark.slow  # ~20-30 s of CLIP, aesthetic and BLIP-2 actors (make test-slow, CI runs it):
# MinScore (test_min_score.py), the hierarchical selection (test_clustering.py) and a whole
# Syn7M run (test_syn7m_pipeline_end_to_end) are in make test
def test_value_thresholds_and_hierarchical_selection(
    tmp_path, demo_pool, tiny_models, aesthetic_weights, ray_local
):
    pool, _ = demo_pool
    out = tmp_path / "out"
    cfg = syn7m_cfg(
        pool,
        out,
        tiny_models,
        aesthetic_weights,
        "aesthetic.keep_top_fraction=null",
        "aesthetic.min_score=4.75",
        "similarity.keep_top_fraction=null",
        "similarity.min_sim=-0.01",
        "cluster.levels=[4, 2]",
        "cluster.target_size=5",
        "cluster.max_train_points=6",
    )
    doc = curate(cfg, progress=False)
    rows = read_ledger(out).to_pylist()
    for r in rows:
        if r["aesthetic"] is not None and r["aesthetic"] < 4.75:
            assert (r["stage"], r["reason"]) == ("aesthetic", "aesthetic<4.75")
        if r["stage"] == "clip_sim":
            assert r["clip_sim"] < -0.01 and r["reason"] == "clip_sim<-0.01"
    survivors = [r for r in rows if r["cluster"] is not None]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["clusters"]["strategy"] == "hierarchical"
    assert stats["thresholds"]["aesthetic"] == [4.75]
    assert doc["samples"] == min(5, len(survivors))
    # the selection water-fills down the tree over the ledger's own level-1 clusters (trained on
    # 6 sampled rows, assigned to all), whose centroids alone give the upper level
    centroids = np.load(out / "clusters" / "centroids.npy")
    labels = np.array([r["cluster"] for r in survivors])
    tree = [(centroids, labels), *upper_levels(centroids, [2], seed=cfg.cluster.seed)]
    want = Counter(labels[select_from_tree(tree, 5, seed=cfg.cluster.seed)].tolist())
    kept = Counter(r["cluster"] for r in survivors if r["stage"] != "cluster")
    assert kept == want
