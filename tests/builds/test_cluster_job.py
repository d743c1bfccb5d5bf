"""The build as a Ray job on a real local cluster, and a build killed with -9 then rerun.

Both are ``slow`` (a head node with its dashboard, a build in a subprocess): ``make test-slow``
runs them, and CI runs that target after ``make test``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from manifests.configs import load_config
from manifests.ledger import read_ledger
from tests.builds.conftest import SMALL_BUILD
from tests.ray_head import ray_head
from vl3data.builder.config import BuildConfig
from vl3data.builder.execute import run_build
from vl3data.builder.run_node import read_marker

pytestmark = pytest.mark.slow
REPO = Path(__file__).parents[2]
DEMO = REPO / "configs" / "build_demo.yaml"
SMALL_SETS = ("curated", "videos/caption", "videos/grounding", "mix/stage1", "mix/stage3")
DEMO_SETS = (
    "demo_syn7m",
    "demo_syn7m_captions/short",
    "demo_syn7m_captions/detailed",
    "demo_videos/caption",
    "demo_videos/streaming",
    "demo_videos/grounding",
    *(f"demo_mix/stage{n}" for n in (1, 2, 3, 4)),
)


def in_process(data: Path, out: Path, config: Path = SMALL_BUILD, sets=(), targets=None):
    sets = [f"paths.data={data}", f"paths.out={out}", *sets]
    return run_build(load_config(BuildConfig, str(config), sets), targets, echo=lambda _: None)


def assert_same_sets(a: Path, b: Path, names=SMALL_SETS) -> None:
    """Same samples, byte for byte, and the same ledger, in every shard set of the build."""
    for name in names:
        da = json.loads((a / name / "dataset.json").read_text())
        db = json.loads((b / name / "dataset.json").read_text())
        assert da["shards"] == db["shards"], name
        assert da["build"]["fingerprint"] == db["build"]["fingerprint"], name
        for s in da["shards"]:
            assert (a / name / s["path"]).read_bytes() == (b / name / s["path"]).read_bytes()
        assert ledger_rows(a / name) == ledger_rows(b / name), name


def ledger_rows(out: Path) -> list[dict]:
    """Ledger rows less timings (``*_s`` columns), in a stable order."""
    rows = [
        {k: v for k, v in r.items() if not k.endswith("_s")} for r in read_ledger(out).to_pylist()
    ]
    return sorted(rows, key=lambda r: json.dumps(r, sort_keys=True, default=str))


@pytest.fixture()
def demo_inputs(tmp_path) -> Path:
    """What `make demo` writes to data/: the photo pool, the videos, the tiny models."""
    from video_prep.sample_videos import write_demo_videos
    from vl3data.sample_media import write_demo_pool
    from vl3data.tiny_models import main as write_tiny_models

    data = tmp_path / "data"
    write_demo_pool(data / "demo_pool")
    write_demo_videos(data / "demo_videos")
    assert write_tiny_models([str(data / "models")]) == 0
    return data


def test_ray_job_submit_builds_what_the_in_process_build_does(
    demo_inputs, aesthetic_weights, tmp_path, ray_local
):
    """The demo build up to its mixtures (training aside: minutes on 2 cores) as a Ray job."""
    out = tmp_path / "job_out"
    sets = [f"paths.aesthetic={aesthetic_weights}"]
    with ray_head(dashboard=True) as head:
        cmd = [
            str(Path(sys.executable).parent / "ray"),
            "job",
            "submit",
            "--address",
            head.dashboard,
            "--working-dir",
            ".",
            "--no-wait",
            "--",
            "vl3data",
            "build",
            "configs/build_demo.yaml",
            "--target",
            "mix",
            "--set",
            f"paths.data={demo_inputs}",
            "--set",
            f"paths.out={out}",
            "--set",
            sets[0],
        ]
        for _ in range(30):  # the head's job agent registers a few seconds after the head
            sub = subprocess.run(cmd, cwd=REPO, env=head.env, capture_output=True, text=True)
            if "No available agent" not in sub.stderr:
                break
            time.sleep(2)
        assert sub.returncode == 0, sub.stderr[-3000:]
        job_id = re.search(r"raysubmit_[A-Za-z0-9]+", sub.stdout + sub.stderr).group(0)
        from ray.job_submission import JobStatus, JobSubmissionClient

        client = JobSubmissionClient(head.dashboard)
        deadline = time.time() + 400
        while time.time() < deadline:
            status = client.get_job_status(job_id)
            if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
                break
            time.sleep(1)
        log = client.get_job_logs(job_id)
    assert status == JobStatus.SUCCEEDED, log[-4000:]
    assert "built 7 node(s)" in log
    assert read_marker(str(out / ".build" / "demo"), "mix.stage4")["state"] == "done"
    embedded = tmp_path / "embedded_out"
    in_process(demo_inputs, embedded, DEMO, sets, ["mix"])
    assert_same_sets(out, embedded, DEMO_SETS)


def test_kill_9_mid_build_then_rerun_loses_and_doubles_nothing(small_inputs, tmp_path, ray_local):
    out = tmp_path / "out"
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "vl3data"),
            "build",
            str(SMALL_BUILD),
            "--set",
            f"paths.data={small_inputs}",
            "--set",
            f"paths.out={out}",
            "--set",
            "max_parallel=1",  # curate, then the videos: a window to kill in
        ],
        cwd=REPO,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    state = str(out / ".build")
    deadline = time.time() + 300
    killed_in = None
    while time.time() < deadline and proc.poll() is None:
        for node in ("video.patterns", "curate"):
            m = read_marker(state, node)
            if (
                m
                and m["state"] == "running"
                and any(
                    (read_marker(state, n) or {}).get("state") == "done"
                    for n in ("curate", "video.patterns")
                )
            ):
                killed_in = node
                break
        if killed_in:
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait(timeout=60)
    assert killed_in, "the build finished before it could be killed"
    done_first = next(n for n in ("curate", "video.patterns") if n != killed_in)
    before = read_marker(state, done_first)

    result = in_process(small_inputs, out)
    assert done_first not in result.ran and killed_in in result.ran
    assert result.results[killed_in]["resumed"] is True
    assert read_marker(state, done_first) == before
    fresh = tmp_path / "fresh"
    in_process(small_inputs, fresh)
    assert_same_sets(out, fresh)
