"""The trainer launched by Ray Train (two CPU workers on the embedded Ray, gloo) instead of
torchrun: the same loop, the same data split, so the same losses and weights as torchrun's."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

from safetensors.torch import load_file

from vl3data import cli

ROOT = Path(__file__).resolve().parents[2]
ARGS = ["--stage", "1-2", "--set", "train.batch_size=3", "--set", "data.tokens_per_batch=64"]


def test_ray_train_matches_torchrun(
    tmp_path, train_recipe, tiny_vl3_checkpoint, train_config_writer, ray_local
):
    runs = {}
    for name in ("ray", "torchrun"):
        runs[name] = train_config_writer(
            tmp_path / f"{name}.yaml",
            train_recipe,
            tmp_path / name,
            init=tiny_vl3_checkpoint,
            steps=2,
            lr_scale=300,
        )
    assert cli.main(["train", runs["ray"], *ARGS, "--ray-workers", "2"]) == 0
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd += ["-m", "model.train", runs["torchrun"], *ARGS]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    ray_sum = json.loads((tmp_path / "ray" / "summary.json").read_text())
    ref_sum = json.loads((tmp_path / "torchrun" / "summary.json").read_text())
    for n in ("1", "2"):
        r, ref = ray_sum["stages"][n], ref_sum["stages"][n]
        assert r["world_size"] == 2 and r["done"] and r["in_sync"], r
        assert all(math.isfinite(x) for x in r["losses"])
        assert r["losses"] == ref["losses"]  # same ranks, same shares of the mixture
        a = load_file(str(tmp_path / "ray" / f"stage{n}" / "final" / "model.safetensors"))
        b = load_file(str(tmp_path / "torchrun" / f"stage{n}" / "final" / "model.safetensors"))
        assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    assert (tmp_path / "ray" / "ray_train").is_dir()
