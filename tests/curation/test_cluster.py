"""Cluster mode: the same job against a real ``ray start --head`` on 127.0.0.1
(:mod:`tests.ray_head`)."""

from __future__ import annotations

import os
import subprocess

import pytest

from manifests.dataset import read_dataset_json
from manifests.ledger import read_ledger
from tests.cli import curate_cmd
from tests.ray_head import LOOPBACK_ENV
from tests.ray_head import ray_head as start_head

pytestmark = pytest.mark.slow  # a head node per module: `make test-slow` (CI runs it)


@pytest.fixture(scope="module")
def ray_head():
    with start_head() as head:
        yield head.address


def test_curate_on_a_local_cluster_matches_embedded(tmp_path, demo_pool, ray_head, ray_local):
    pool, expected = demo_pool
    out = tmp_path / "cluster_out"
    env = {**os.environ, **LOOPBACK_ENV}
    run = subprocess.run(
        curate_cmd(
            "configs/curate_local.yaml",
            sets=[f"input.path={pool}", f"output={out}", "input.partition_size=4"],
            extra=["--ray-address", ray_head],
        ),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"joining the Ray cluster at {ray_head}" in run.stderr

    from curation.config import CurateConfig
    from curation.curate import curate
    from manifests.configs import load_config

    embedded = tmp_path / "embedded_out"
    cfg = load_config(
        CurateConfig,
        "configs/curate_local.yaml",
        [f"input.path={pool}", f"output={embedded}", "input.partition_size=4"],
    )
    curate(cfg, progress=False)
    cluster_ledger = sorted(read_ledger(out).to_pylist(), key=lambda r: r["id"])
    assert len(cluster_ledger) == len(expected)
    assert cluster_ledger == sorted(read_ledger(embedded).to_pylist(), key=lambda r: r["id"])
    shards = read_dataset_json(out)["shards"]
    assert shards == read_dataset_json(embedded)["shards"]
    for s in shards:
        assert (out / s["path"]).read_bytes() == (embedded / s["path"]).read_bytes()


def test_syn7m_filters_on_a_local_cluster(
    tmp_path, demo_pool, tiny_models, aesthetic_weights, ray_head, ray_local
):
    """The model stages run as actor pools on the cluster; same result as embedded."""
    pool, _ = demo_pool
    overrides = [
        f"input.path={pool}",
        f"clip.model=local-dir:{tiny_models / 'open_clip'}",
        f"caption.model={tiny_models / 'blip2'}",
        f"aesthetic.weights={aesthetic_weights}",
    ]
    configs = ["configs/syn7m_filters.yaml", "configs/models/tiny.yaml"]
    out = tmp_path / "cluster_out"
    run = subprocess.run(
        curate_cmd(*configs, sets=[*overrides, f"output={out}"], extra=["--ray-address", ray_head]),
        env={**os.environ, **LOOPBACK_ENV},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]

    from curation.config import CurateConfig
    from curation.curate import curate
    from manifests.configs import load_config

    embedded = tmp_path / "embedded_out"
    curate(load_config(CurateConfig, configs, [*overrides, f"output={embedded}"]), progress=False)
    got = sorted(read_ledger(out).to_pylist(), key=lambda r: r["id"])
    want = sorted(read_ledger(embedded).to_pylist(), key=lambda r: r["id"])
    assert [(r["id"], r["status"], r["reason"], r["cluster"]) for r in got] == [
        (r["id"], r["status"], r["reason"], r["cluster"]) for r in want
    ]
    for a, b in zip(got, want, strict=True):
        for col in ("aesthetic", "clip_sim"):
            assert (a[col] is None) == (b[col] is None)
            assert a[col] is None or abs(a[col] - b[col]) < 1e-4
    assert read_dataset_json(out)["samples"] == read_dataset_json(embedded)["samples"]
