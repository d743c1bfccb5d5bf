"""An embedded Ray starts without printing anything a user has to read past."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
START = """
import ray
from engine.ray_session import start_embedded
start_embedded(num_cpus=1)
print(ray.get(ray.remote(lambda: 41 + 1).remote()))
ray.shutdown()
"""


def test_an_embedded_start_prints_no_token_auth_warning():
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(REPO)}
    env.pop("RAY_AUTH_MODE", None)  # Ray's default: token auth on, announced by a WARNING
    done = subprocess.run(
        [sys.executable, "-c", START],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "42"  # the cluster works, with authentication on
    assert "Token authentication" not in done.stderr
