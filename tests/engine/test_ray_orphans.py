"""A driver killed with kill -9 leaves Ray's dashboard and runtime-env agents behind (Ray 2.x
re-parents them to init, where they linger for a minute or more); the next embedded start
stops them. Real Ray, real processes, real SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.ray_orphans import orphaned_agents
from engine.ray_session import quiet_home

# three real Ray start-ups and a SIGKILL: `make test-slow` (and CI) runs it; `make test` stays
# under 10 minutes on 2 cores
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
DRIVER = """
import time
from engine.ray_session import start_embedded
import ray
start_embedded(num_cpus=1)
ray.get(ray.remote(lambda: 1).remote())
print("up", flush=True)
time.sleep(600)
"""
RESTART = """
from engine.ray_session import start_embedded
import ray
start_embedded(num_cpus=1)
ray.shutdown()
"""


def _env() -> dict[str, str]:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    env["PYTHONPATH"] = str(REPO)
    return env


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_the_next_start_stops_agents_a_killed_driver_left_behind():
    home = quiet_home(Path(os.environ["HOME"]))
    before = set(orphaned_agents(home))
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER],
        cwd=REPO,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert driver.stdout.readline().strip() == "up"
    finally:
        driver.send_signal(signal.SIGKILL)  # the driver only, as the OOM killer would
        driver.wait()
    deadline = time.monotonic() + 60
    left: set[int] = set()
    while time.monotonic() < deadline and not left:
        left = set(orphaned_agents(home)) - before
        time.sleep(0.2)
    if not left:
        pytest.skip("this Ray left no agent behind its killed driver")
    restart = subprocess.run(
        [sys.executable, "-c", RESTART],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert restart.returncode == 0, restart.stderr
    assert not any(_alive(pid) for pid in left), f"still running: {sorted(left)}"
    assert not set(orphaned_agents(home)) & left
