"""A real two-node Ray cluster on this machine (two raylets and object stores, both on
127.0.0.1): partitions write their shards on both nodes, and losing a node mid-run, then
rerunning, gives the shard set an uninterrupted run gives."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from curation.config import CurateConfig
from curation.curate import curate
from manifests.configs import load_config
from manifests.dataset import read_dataset_json
from manifests.ledger import read_ledger
from tests.cli import curate_cmd, start_until_done
from tests.ray_head import two_node_cluster

SETS = ["input.partition_size=1", "shards.max_count=3", "keep_work=true"]


def _pool(pool: Path) -> None:
    for i in range(1, 3):  # more partitions than the cluster's two CPUs, many times over
        shutil.copytree(pool / "photos", pool / f"copy{i}")


def _snapshot(out: Path) -> tuple[list[dict], dict[str, bytes]]:
    ledger = sorted(read_ledger(out).to_pylist(), key=lambda r: r["id"])
    shards = {s["path"]: (out / s["path"]).read_bytes() for s in read_dataset_json(out)["shards"]}
    return ledger, shards


def _nodes(out: Path) -> set[str]:
    done = out / "_work" / "write" / "done"
    return {json.loads(p.read_text())["node"] for p in done.iterdir()}


def _cmd(pool: Path, out: Path, address: str) -> list[str]:
    return curate_cmd(
        "configs/curate_local.yaml",
        sets=[f"input.path={pool}", f"output={out}", f"ray.address={address}", *SETS],
    )


@pytest.mark.slow  # two Ray nodes and three runs: ~1-2 min on 2 cores (make test-slow)
def test_two_nodes_write_shards_and_survive_losing_one(tmp_path, demo_pool, ray_local):
    pool, _ = demo_pool
    _pool(pool)
    reference = tmp_path / "reference"
    cfg = load_config(
        CurateConfig,
        "configs/curate_local.yaml",
        [f"input.path={pool}", f"output={reference}", *SETS],
    )
    curate(cfg, progress=False)
    want = _snapshot(reference)

    with two_node_cluster(cpus_per_node=1) as head:
        both = tmp_path / "both"
        run = subprocess.run(
            _cmd(pool, both, head.address),
            env=head.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        assert len(_nodes(both)) == 2  # partitions ran, and wrote, on both nodes
        assert _snapshot(both) == want

        lost = tmp_path / "lost"
        done = lost / "_work" / "write" / "done"
        cmd = _cmd(pool, lost, head.address)
        proc = start_until_done(cmd, done, 2, 180, env=head.env, start_new_session=True)
        head.kill_worker()  # the second machine is gone, mid-run
        try:
            proc.wait(timeout=240)  # Ray may finish on the head alone, or give up
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        rerun = subprocess.run(
            _cmd(pool, lost, head.address),
            env=head.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        assert _snapshot(lost) == want
