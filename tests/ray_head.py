"""A real ``ray start --head`` on 127.0.0.1 for the cluster tests, started and stopped by them.

The head runs in its own process group (``ray stop`` would also kill other Ray instances on the
machine). ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` keeps every Ray address on loopback: without it
Ray swaps 127.0.0.1 for the machine's routable IP. With ``dashboard=True`` the head also serves
the job API that ``ray job submit`` talks to.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

RAY = Path(sys.executable).parent / "ray"
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled"}


def quiet_env() -> dict[str, str]:
    """What a Ray we start from a test needs to send nothing off the machine: no usage
    statistics, and a HOME whose ``ray_bootstrap_config.yaml`` spares the cloud metadata probe
    (``engine.ray_session``)."""
    from engine.ray_session import quiet_home

    real = Path.home()
    return {
        "RAY_USAGE_STATS_ENABLED": "0",
        "HOME": str(quiet_home(real)),
        "XDG_CACHE_HOME": os.environ.get("XDG_CACHE_HOME", str(real / ".cache")),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Head:
    address: str  # GCS, for --ray-address
    dashboard: str | None  # http://127.0.0.1:PORT, for ray job submit
    env: dict  # the environment the head runs with (PATH has this venv's bin first)


@contextlib.contextmanager
def ray_head(num_cpus: int = 2, dashboard: bool = False) -> Iterator[Head]:
    port = free_port()
    temp_dir = tempfile.mkdtemp(prefix="vl3ray-")  # short: Ray's socket paths must fit 107 bytes
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, **LOOPBACK_ENV, "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}"}
    env.update(quiet_env())
    args = [
        str(RAY),
        "start",
        "--head",
        f"--port={port}",
        "--node-ip-address=127.0.0.1",
        f"--num-cpus={num_cpus}",
        "--disable-usage-stats",
        "--block",
        f"--temp-dir={temp_dir}",
    ]
    dash = None
    if dashboard:
        dash_port = free_port()
        args += [
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dash_port}",
            # the job agent's ports: the defaults are taken by any other Ray on the machine (the
            # tests' embedded one), and a head whose agent cannot bind accepts no job
            f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--metrics-export-port={free_port()}",
        ]
        dash = f"http://127.0.0.1:{dash_port}"
    else:
        args.append("--include-dashboard=false")
    head = subprocess.Popen(
        args,
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            probe = subprocess.run(
                [str(RAY), "status", f"--address={address}"],
                env=env,
                capture_output=True,
                text=True,
            )
            if probe.returncode == 0 and (not dash or _up(dash)):
                break
            if head.poll() is not None:
                pytest.fail(f"ray start --head died: {head.stdout.read()[-3000:]}")
            time.sleep(1)
        else:
            pytest.fail("the Ray head did not come up in 120 s")
        yield Head(address, dash, env)
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(timeout=10)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _up(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url}/api/version", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


@dataclass
class TwoNodes:
    address: str  # the head's GCS address, for ray.address
    env: dict  # the environment a driver joining it needs
    control: subprocess.Popen  # the process holding the cluster

    def kill_worker(self) -> None:
        """SIGKILL the second node's raylet and workers, as a lost machine would vanish."""
        assert self.control.stdin is not None and self.control.stdout is not None
        self.control.stdin.write("kill-worker\n")
        self.control.stdin.flush()
        line = self.control.stdout.readline().strip()
        assert line == "killed", line


@contextlib.contextmanager
def two_node_cluster(cpus_per_node: int = 1) -> Iterator[TwoNodes]:
    """A head and a second node on this machine, each with its own raylet and object store
    (``ray.cluster_utils.Cluster``, held by a process of its own so this test process can keep
    its embedded Ray). ``ray start`` refuses a second node while addresses stay on loopback;
    the Cluster utility keeps both nodes on 127.0.0.1."""
    env = {**os.environ, **LOOPBACK_ENV, **quiet_env()}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.two_node_cluster", str(cpus_per_node)],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        address = proc.stdout.readline().strip()
        if not address:
            pytest.fail(f"the two-node cluster did not start (exit {proc.wait(timeout=30)})")
        yield TwoNodes(address, env, proc)
    finally:
        with contextlib.suppress(BrokenPipeError, OSError):
            assert proc.stdin is not None
            proc.stdin.write("stop\n")
            proc.stdin.flush()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
