"""The trainer's GPU paths: bf16 autocast on CUDA, nccl between two ranks (torchrun), and a Ray
Train worker with a GPU. Run with `make test-gpu` on a machine with CUDA; skipped elsewhere."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

ROOT = Path(__file__).resolve().parents[2]
ARGS = ["--set", "train.batch_size=3", "--set", "data.tokens_per_batch=64"]


def _config(tmp_path, train_recipe, init, writer, name="gpu") -> str:
    return writer(
        tmp_path / f"{name}.yaml", train_recipe, tmp_path / name, init=init, steps=4, lr_scale=300
    )


def test_stages_train_in_bf16_on_the_gpu(
    tmp_path, train_recipe, tiny_vl3_checkpoint, train_config_writer
):
    from model.train import main

    config = _config(tmp_path, train_recipe, tiny_vl3_checkpoint, train_config_writer)
    stages = main([config, "--stage", "1-3", *ARGS])["stages"]
    want = "bfloat16" if torch.cuda.is_bf16_supported() else "fp32"
    for r in stages.values():
        assert r["device"].startswith("cuda") and r["autocast"] == want
        assert r["done"] and all(math.isfinite(x) for x in r["losses"])
    assert stages[2]["last_loss"] < stages[2]["first_loss"]


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_two_nccl_ranks_stay_in_sync(
    tmp_path, train_recipe, tiny_vl3_checkpoint, train_config_writer
):
    config = _config(tmp_path, train_recipe, tiny_vl3_checkpoint, train_config_writer)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd += ["-m", "model.train", config, "--stage", "2", *ARGS]
    proc = subprocess.run(
        cmd, cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads((tmp_path / "gpu" / "summary.json").read_text())["stages"]["2"]
    assert r["world_size"] == 2 and r["in_sync"] and r["device"].startswith("cuda")


def test_a_ray_train_worker_with_a_gpu(
    tmp_path, train_recipe, tiny_vl3_checkpoint, train_config_writer, ray_local
):
    from vl3data import cli

    config = _config(tmp_path, train_recipe, tiny_vl3_checkpoint, train_config_writer)
    assert (
        cli.main(["train", config, "--stage", "2", *ARGS, "--ray-workers", "1", "--ray-gpu"]) == 0
    )
    r = json.loads((tmp_path / "gpu" / "summary.json").read_text())["stages"]["2"]
    assert r["done"] and r["device"].startswith("cuda")
