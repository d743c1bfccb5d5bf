"""The trainer launched by Ray Train instead of torchrun: the same loop and the same data split,
so the same losses and weights as torchrun's. Two CPU workers (gloo) on the embedded Ray, and
(slow) on a real ``ray start --head`` on loopback."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from tests.model.conftest import TWO_RANK_ARGS
from tests.ray_head import LOOPBACK_ENV, ray_head
from vl3data import cli

ROOT = Path(__file__).resolve().parents[2]
ARGS = TWO_RANK_ARGS  # as the torchrun reference (tests/model/conftest.py)


def _configs(tmp_path, names, train_recipe, init, writer) -> dict[str, str]:
    return {
        n: writer(
            tmp_path / f"{n}.yaml", train_recipe, tmp_path / n, init=init, steps=2, lr_scale=300
        )
        for n in names
    }


def _torchrun(config: str, stage: str) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd += ["-m", "model.train", config, "--stage", stage, *ARGS]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _assert_same_run(ours: Path, ref: Path, stages: list[str]) -> None:
    got = json.loads((ours / "summary.json").read_text())
    want = json.loads((ref / "summary.json").read_text())
    for n in stages:
        r, w = got["stages"][n], want["stages"][n]
        assert r["world_size"] == 2 and r["done"] and r["in_sync"], r
        assert all(math.isfinite(x) for x in r["losses"])
        assert r["losses"] == w["losses"]  # same ranks, same shares of the mixture
        a = load_file(str(ours / f"stage{n}" / "final" / "model.safetensors"))
        b = load_file(str(ref / f"stage{n}" / "final" / "model.safetensors"))
        assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    assert (ours / "ray_train").is_dir()  # Ray Train's run state, beside ours


def test_ray_train_matches_torchrun(
    tmp_path, train_recipe, tiny_vl3_checkpoint, train_config_writer, torchrun_two_ranks, ray_local
):
    """Against the session's torchrun run of stages 1-2 (tests/model/conftest.py: 3 steps each,
    the same arguments), which tests/model/test_train.py checks too."""
    config = train_config_writer(
        tmp_path / "ray.yaml",
        train_recipe,
        tmp_path / "ray",
        init=tiny_vl3_checkpoint,
        steps=3,
        lr_scale=300,
    )
    assert cli.main(["train", config, "--stage", "1-2", *ARGS, "--ray-workers", "2"]) == 0
    _assert_same_run(tmp_path / "ray", torchrun_two_ranks, ["1", "2"])


def test_a_bad_config_fails_before_ray_starts(tmp_path, train_recipe, train_config_writer):
    config = train_config_writer(tmp_path / "t.yaml", train_recipe, tmp_path / "out")
    code = cli.main(["train", config, "--ray-workers", "2", "--set", "model.init_llm=/nowhere"])
    assert code == 2 and not (tmp_path / "out").exists()
    assert cli.main(["train", config, "--ray-address", "auto"]) == 2  # needs --ray-workers
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_ray_train_on_a_local_cluster_matches_torchrun(
    tmp_path, train_recipe, tiny_vl3_checkpoint, train_config_writer
):
    cfg = _configs(tmp_path, ["ray", "ref"], train_recipe, tiny_vl3_checkpoint, train_config_writer)
    with ray_head(num_cpus=2) as head:
        cmd = [str(Path(sys.executable).parent / "vl3data"), "train", cfg["ray"], "--stage", "1"]
        cmd += [*ARGS, "--ray-workers", "2", "--ray-address", head.address]
        env = {**os.environ, **LOOPBACK_ENV}
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    _torchrun(cfg["ref"], "1")
    _assert_same_run(tmp_path / "ray", tmp_path / "ref", ["1"])


@pytest.mark.slow  # Ray Train's start alone is ~18 s on 2 cores (make test-slow, CI runs it);
# the launch it calls is test_ray_train_matches_torchrun's, in make test
def test_a_build_train_node_with_workers_runs_ray_train(
    tmp_path, train_recipe, tiny_vl3_checkpoint, train_config_writer, ray_local
):
    """``train.workers`` in a build: the stage node launches Ray Train inside the build's Ray."""
    from manifests.configs import load_config
    from model.config import TrainConfig
    from vl3data.builder.graph import Node
    from vl3data.builder.run_node import RUNNERS

    config = train_config_writer(
        tmp_path / "t.yaml", train_recipe, tmp_path / "out", init=tiny_vl3_checkpoint, steps=2
    )
    job = load_config(TrainConfig, config, ARGS[1::2])
    options = {"num_gpus": 0, "workers": 2, "use_gpu": False, "cpus_per_worker": 1.0}
    node = Node("train.stage2", "train", "train", job, [], {}, "h", stage=2, options=options)
    assert RUNNERS["train"](node, False) == {"unit": "steps", "inputs": 2, "outputs": 2}
    r = json.loads((tmp_path / "out" / "summary.json").read_text())["stages"]["2"]
    assert r["world_size"] == 2 and r["in_sync"] and r["done"]


@pytest.mark.slow
def test_kill_9_of_a_ray_train_run_then_resume_gives_the_uninterrupted_weights(
    tmp_path, train_recipe, tiny_vl3_checkpoint, train_config_writer
):
    """SIGKILL of the launcher (and the embedded Ray it started) once stage 2 has a checkpoint;
    ``--resume`` finishes it with the losses and weights of a run never interrupted."""
    writer = train_config_writer
    kw = {"init": tiny_vl3_checkpoint, "steps": 6, "lr_scale": 300}
    killed = writer(tmp_path / "k.yaml", train_recipe, tmp_path / "k", **kw)
    whole = writer(tmp_path / "w.yaml", train_recipe, tmp_path / "w", **kw)
    args = ["--stage", "2", *ARGS, "--set", "train.checkpoint_every=1", "--ray-workers", "2"]
    vl3 = str(Path(sys.executable).parent / "vl3data")
    env = {**os.environ, **LOOPBACK_ENV}
    proc = subprocess.Popen(
        [vl3, "train", killed, *args],
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    latest = tmp_path / "k" / "stage2" / "checkpoints" / "latest"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if latest.is_file() and latest.read_text() >= "step-000002":
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (tmp_path / "k" / "stage2" / "final").exists()

    for config, extra in ((killed, ["--resume"]), (whole, [])):
        run = subprocess.run(
            [vl3, "train", config, *args, *extra],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    got = json.loads((tmp_path / "k" / "summary.json").read_text())["stages"]["2"]
    want = json.loads((tmp_path / "w" / "summary.json").read_text())["stages"]["2"]
    assert got["losses"] == want["losses"] and got["steps"] == 6
    a = load_file(str(tmp_path / "k" / "stage2" / "final" / "model.safetensors"))
    b = load_file(str(tmp_path / "w" / "stage2" / "final" / "model.safetensors"))
    assert all(a[k].equal(b[k]) for k in b)
