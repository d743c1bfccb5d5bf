"""Nothing we run sends a request off loopback, Ray included: an embedded Ray started the way
every job starts it connects only to 127.0.0.1 (every ``connect`` of every process it starts,
traced with strace). Ray 2.60's dashboard would otherwise ask 169.254.169.254 and the DNS for
metadata.google.internal who hosts the machine, even with usage statistics off."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = """
import os
from engine.ray_session import init_ray
init_ray(num_cpus=1, log_level="WARNING")
import ray
env = ray.get(ray.remote(lambda: dict(os.environ)).remote())
home, cache = env["HOME"], env["XDG_CACHE_HOME"]
print("worker", home, cache, "driver", os.environ["HOME"])
import time; time.sleep(3)  # the dashboard's usage module starts a moment after ray.init
ray.shutdown()
"""


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace (make setup installs it)")
def test_an_embedded_ray_connects_only_to_loopback(tmp_path):
    trace = tmp_path / "connects.txt"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    proc = subprocess.run(
        [
            "strace",
            "-f",
            "-qq",
            "-e",
            "trace=connect",
            "-o",
            str(trace),
            sys.executable,
            "-c",
            SCRIPT,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("worker"))
    _, worker_home, cache, _, driver_home = line.split()
    assert driver_home == str(Path.home())  # the driver keeps its HOME
    assert (Path(worker_home) / "ray_bootstrap_config.yaml").is_file()
    assert cache.startswith(str(Path.home()))  # model caches stay in the real HOME
    text = trace.read_text()
    v4 = re.findall(r'sin_addr=inet_addr\("([0-9.]+)"\)', text)
    v6 = re.findall(r'inet_pton\(AF_INET6, "([^"]+)"', text)
    assert v4 or v6, "strace saw no connect at all: the check would prove nothing"
    off = sorted(
        {a for a in v4 if not a.startswith("127.")}
        | {a for a in v6 if a not in ("::1",) and not a.startswith("::ffff:127.")}
    )
    assert not off, f"connections off loopback: {off}"
