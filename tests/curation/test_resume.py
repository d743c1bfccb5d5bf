"""Kill -9 mid-run, rerun, compare with an uninterrupted run: same ledger, same shard bytes."""

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


def cli(pool: Path, out: Path) -> list[str]:
    return curate_cmd(
        "configs/curate_local.yaml",
        sets=[
            f"input.path={pool}",
            f"output={out}",
            "ray.num_cpus=2",
            "input.partition_size=2",
            "shards.max_count=7",
        ],
    )


def big_pool(pool: Path) -> None:
    """The demo pool four times over (in sub-folders), so a run has many partitions."""
    for i in range(1, 4):
        shutil.copytree(pool / "photos", pool / f"copy{i}")
        shutil.copytree(pool / "odd", pool / f"odd{i}")


def snapshot(out: Path) -> tuple[list[dict], dict[str, bytes]]:
    ledger = sorted(read_ledger(out).to_pylist(), key=lambda r: r["id"])
    shards = {s["path"]: (out / s["path"]).read_bytes() for s in read_dataset_json(out)["shards"]}
    return ledger, shards


@pytest.mark.slow  # a minute on 2 cores: `make test-slow` (CI runs it)
def test_kill_9_then_rerun_equals_uninterrupted(tmp_path, demo_pool, ray_local):
    pool, _ = demo_pool
    big_pool(pool)
    out = tmp_path / "killed"
    done_dir = out / "_work" / "write" / "done"  # the first stage alone writes in its one pass
    proc = start_until_done(cli(pool, out), done_dir, 3, start_new_session=True)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray it started
    proc.wait(timeout=30)
    total = len(json.loads((out / "_work" / "plan.json").read_text())["partitions"])
    finished = len(list(done_dir.iterdir()))
    assert not (out / "dataset.json").exists(), "killed too late to test anything"
    assert 3 <= finished < total

    rerun = subprocess.run(cli(pool, out), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]

    reference = tmp_path / "reference"
    overrides = [
        f"input.path={pool}",
        f"output={reference}",
        "input.partition_size=2",
        "shards.max_count=7",
    ]
    curate(load_config(CurateConfig, "configs/curate_local.yaml", overrides), progress=False)

    got_ledger, got_shards = snapshot(out)
    want_ledger, want_shards = snapshot(reference)
    assert (
        len(got_ledger)
        == len(want_ledger)
        == sum(1 for p in pool.rglob("*") if p.is_file() and p.suffix != ".txt")
    )
    assert got_ledger == want_ledger
    assert got_shards.keys() == want_shards.keys() and len(got_shards) > 1
    assert got_shards == want_shards
