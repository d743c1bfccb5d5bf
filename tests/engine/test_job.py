"""The job skeleton's guards: an output apart from every input, one run at a time on an output,
and no dataset.json naming a shard that is not there."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from curation.config import CurateConfig
from curation.curate import curate
from engine.job import LOCK, output_lock
from manifests.configs import ConfigError, load_config
from manifests.dataset import write_dataset_json


def _cfg(pool, out, *extra: str) -> CurateConfig:
    return load_config(
        CurateConfig,
        "configs/curate_local.yaml",
        [f"input.path={pool}", f"output={out}", "input.partition_size=6", *extra],
    )


@pytest.mark.parametrize("where", ["same", "inside", "holds"])
def test_an_output_that_touches_the_input_is_refused_before_any_work(tmp_path, demo_pool, where):
    pool, _ = demo_pool
    files = sorted(p for p in pool.rglob("*") if p.is_file())
    if where == "same":
        out = pool
    elif where == "inside":
        out = pool / "curated"
    else:  # the pool lies inside the output: a restart would clear the output's entries
        out = pool.parent
    with pytest.raises(ConfigError, match="output") as err:
        curate(_cfg(pool, out), restart=True)
    assert "outside every input" in str(err.value)
    assert sorted(p for p in pool.rglob("*") if p.is_file()) == files  # nothing touched
    assert not (out / "_work").exists()


def test_a_second_run_on_a_busy_output_refuses_naming_the_holder(tmp_path, demo_pool, ray_local):
    pool, _ = demo_pool
    out = tmp_path / "out"
    busy = r"being written by another run \(pid \d+\)"
    with output_lock(out), pytest.raises(RuntimeError, match=busy):
        curate(_cfg(pool, out), progress=False)
    doc = curate(_cfg(pool, out), progress=False)  # the lock died with its holder
    assert doc["samples"] > 0
    assert not (out / LOCK).exists()  # a finished output keeps no lock file


HOLDER = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.pwrite(fd, f"{os.getpid()}\\n".encode(), 0)
print("held", flush=True)
sys.stdin.read()
"""


def test_a_rerun_waits_for_a_dying_holder_instead_of_refusing(tmp_path):
    """A build rerun right after kill -9: the killed build's Ray worker still holds the lock
    until Ray reaps it. With a wait the rerun takes the lock once the holder is gone."""
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(out / LOCK)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RuntimeError, match=rf"pid {holder.pid}\)"), output_lock(out):
            pass  # no wait: refuses at once, naming the holder
        threading.Timer(0.3, holder.kill).start()  # the holder dies while we wait
        with output_lock(out, wait_s=120):
            assert (out / LOCK).read_text().strip() == str(os.getpid())
        assert holder.poll() is not None
    finally:
        holder.kill()
        holder.wait()


def test_dataset_json_is_not_written_while_a_shard_it_names_is_missing(tmp_path):
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "a-000000-000.tar").write_bytes(b"x" * 10)
    shards = [
        {"path": "shards/a-000000-000.tar", "subset": "a", "samples": 1, "bytes": 10},
        {"path": "shards/a-000001-000.tar", "subset": "a", "samples": 1, "bytes": 10},
    ]
    kw = dict(name="t", modality="image", task="t", config={}, config_hash="h")
    with pytest.raises(RuntimeError, match=r"a-000001-000\.tar is missing"):
        write_dataset_json(tmp_path, shards=shards, **kw)
    assert not (tmp_path / "dataset.json").exists()
    write_dataset_json(tmp_path, shards=shards[:1], **kw)
    assert (tmp_path / "dataset.json").is_file()
