"""--log-level DEBUG shows our decisions, and no library's chatter."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from engine.ray_session import OUR_PACKAGES

REPO = Path(__file__).resolve().parents[1]
LINE = re.compile(r"^\d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR) ([\w.]+): ")


#: what a run says as each of its phases starts, by where its passes run (``ray.executor``)
PHASES = {
    "auto": ("starting 2 local worker processes", "curate: writing stats.json"),
    "ray": ("starting an embedded Ray", "Ray up in", "curate: writing stats.json"),
}


@pytest.mark.parametrize("executor", sorted(PHASES))
def test_debug_is_ours_only(tmp_path, demo_pool, executor):
    pool, _ = demo_pool
    vl3data = str(Path(sys.executable).parent / "vl3data")
    cmd = [vl3data, "curate", "configs/curate_local.yaml", "--log-level", "DEBUG", "--no-progress"]
    cmd += ["--set", f"input.path={pool}", "--set", f"output={tmp_path / 'out'}"]
    cmd += ["--set", "input.partition_size=8", "--set", f"ray.executor={executor}"]
    cmd += ["--set", "ray.num_cpus=2"]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    lines = [m.groups() for m in map(LINE.match, done.stderr.splitlines()) if m]
    debug = [name for level, name in lines if level == "DEBUG"]
    assert {"engine.job", "engine.runner"} <= set(debug)  # the plan, and how each pass runs
    outside = {n for n in debug if n.split(".")[0] not in OUR_PACKAGES}
    assert not outside, f"third-party DEBUG lines from {sorted(outside)}"
    # every phase of a run says so as it starts: the workers' start, the pass, the final write
    said = [m.string for m in map(LINE.match, done.stderr.splitlines()) if m]
    for phase in PHASES[executor]:
        assert any(phase in line for line in said), f"no line says {phase!r}"
