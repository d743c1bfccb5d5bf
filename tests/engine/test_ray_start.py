"""An embedded Ray starting in the background: the driver runs partitions until it is up.

Run in a process of its own (the suite shares one Ray, already up). Ray's start is held back
by a gate the driver opens in its second partition, which then waits for Ray to be up, so which
partitions ran where does not depend on the machine's speed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vl3data.sample_media import write_demo_pool

SCRIPT = r"""
import json, os, sys, threading, time
from functools import partial
from pathlib import Path

import pyarrow as pa

from curation.config import InputConfig
from curation.sources import list_partitions, load_partition
from engine import ray_start
from engine.ray_session import _start_logged
from engine.runner import run_partitions
from engine.workdir import WorkDir
from manifests.marks import set_column

pool, work_dir = sys.argv[1], Path(sys.argv[2])
gate = threading.Event()


class WhereItRan:
    # the process that ran each row; in the driver's second partition, lets Ray start and
    # waits until it is up, so the driver hands over right after that partition
    name = "where"

    def __call__(self, batch: pa.Table) -> pa.Table:
        if os.getpid() == DRIVER and batch["partition"][0].as_py() >= 1:
            sys.modules["__main__"].gate.set()  # looked up here: the stage pickles without it
            while not ray_start.current().done():
                time.sleep(0.05)
        return set_column(batch, "pid", pa.array([os.getpid()] * batch.num_rows, pa.int64()))


def start():
    assert gate.wait(120), "the driver never finished its partitions"
    _start_logged(2, 300, "WARNING")


DRIVER = os.getpid()
ray_start.begin(start, driver_works=True)
cfg = InputConfig(path=pool, partition_size=4)
parts = list_partitions(cfg)
work = WorkDir(work_dir)
run_partitions(work, parts, partial(load_partition, cfg=cfg), [WhereItRan()], progress=False)
ray_start.end()
where = {p.index: work.read_partition(p.index, ["pid"])["pid"].to_pylist() for p in parts}
rows = [work.rows(p.index) for p in parts]
phases = json.loads((work_dir / "pass.json").read_text())["phases"]
print(json.dumps({"driver": DRIVER, "where": where, "rows": rows, "phases": phases}))
"""


@pytest.mark.slow  # a Ray of its own: ~7 s idle; every CLI test runs this path too
def test_the_driver_runs_partitions_while_ray_starts_then_hands_over(tmp_path: Path):
    expected = write_demo_pool(tmp_path / "pool")
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "pool"), str(tmp_path / "work")],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    where = {int(k): set(v) for k, v in got["where"].items()}
    assert sum(got["rows"]) == len(expected)  # every input in exactly one partition's pieces
    assert len(where) >= 4
    # the first two partitions ran in the driver, before Ray could start...
    assert where[0] == where[1] == {got["driver"]}
    # ...and once it was up, the rest on Ray's workers, none in the driver
    later = set().union(*(where[i] for i in where if i >= 2))
    assert later and got["driver"] not in later
    # and the pass says so: what the driver did while Ray started, what Ray did once up
    phases = got["phases"]
    assert phases["driver"]["partitions"] == 2 and phases["ray"]["partitions"] == len(where) - 2
    assert phases["driver"]["rows"] + phases["ray"]["rows"] == len(expected)
