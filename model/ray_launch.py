"""Run the trainer under Ray Train: one ``TorchTrainer`` worker per rank, on an embedded Ray or
a cluster (``--ray-address``), instead of ``torchrun``.

    vl3data train configs/train_compact.yaml --stage all --ray-workers 2
    vl3data train my_run.yaml --stage all --ray-workers 16 --ray-gpu --ray-address auto

Ray Train starts the workers, sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` and opens the process
group (gloo on CPU, nccl with ``--ray-gpu``); each worker then runs the very loop ``torchrun``
runs (:func:`model.loop.run`), which sees the group already open and uses it. Checkpoints,
metrics and the report go to ``output`` as always, so ``output`` must be storage every worker
sees (one machine, or a shared file system); Ray Train's own run state goes to
``output/ray_train``. A failed worker fails the run (no automatic restarts): rerun with
``--resume`` to continue from the latest checkpoint.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def _worker(spec: dict[str, Any]) -> None:
    """One rank: the driver's resolved config, read back here, through the ordinary loop."""
    from manifests.configs import load_config
    from model.config import TrainConfig
    from model.loop import run

    if Path(spec["cwd"]).is_dir():  # relative recipe and checkpoint paths are relative to it
        os.chdir(spec["cwd"])
    logging.basicConfig(level=getattr(logging, spec["log_level"].upper(), logging.INFO))
    cfg = load_config(TrainConfig, spec["config"])
    run(cfg, spec["stages"], resume=spec["resume"])


def launch_config(
    cfg,
    stages: list[int],
    *,
    resume: bool,
    workers: int,
    use_gpu: bool = False,
    cpus_per_worker: float = 1.0,
    address: str | None = None,
) -> dict:
    """Train ``stages`` of a validated ``TrainConfig`` on ``workers`` Ray Train workers (joining
    Ray at ``address``, or the Ray this process is already in); returns ``summary.json``.

    The workers read the config from ``output/ray_train/config.yaml``, written here: exactly
    the driver's, overrides applied, whatever files it came from."""
    if not address:  # an embedded Ray serves only this process: keep it on loopback
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray
    import yaml
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from engine.ray_session import init_ray
    from manifests.atomic import write_bytes
    from manifests.configs import to_dict

    cfg.check_runnable(stages)  # bad config: fails here, before Ray
    out = Path(cfg.output).resolve()
    resolved = out / "ray_train" / "config.yaml"
    write_bytes(resolved, yaml.safe_dump(to_dict(cfg), sort_keys=False).encode())
    started = init_ray(address, log_level=cfg.log_level)
    try:
        trainer = TorchTrainer(
            _worker,
            train_loop_config={
                "config": str(resolved),
                "stages": list(stages),
                "resume": resume,
                "cwd": os.getcwd(),
                "log_level": cfg.log_level,
            },
            scaling_config=ScalingConfig(
                num_workers=workers,
                use_gpu=use_gpu,
                resources_per_worker={"CPU": cpus_per_worker, **({"GPU": 1} if use_gpu else {})},
            ),
            run_config=RunConfig(name="ray_train", storage_path=str(out / "ray_train")),
        )
        log.info("Ray Train: %d workers (%s)", workers, "GPU" if use_gpu else "CPU")
        trainer.fit()
    finally:
        if started:
            ray.shutdown()
    summary = json.loads((out / "summary.json").read_text())
    summary["stages"] = {int(n): r for n, r in summary["stages"].items()}  # as run() returns
    return summary


def add_ray_train_args(p: argparse.ArgumentParser) -> None:
    """The Ray Train launch (:mod:`model.ray_launch`), shared with ``vl3data train``."""
    g = p.add_argument_group("Ray Train (instead of torchrun)")
    g.add_argument(
        "--ray-workers", type=int, default=0, metavar="N", help="train on N Ray Train workers"
    )
    g.add_argument("--ray-gpu", action="store_true", help="one GPU per worker (nccl)")
    g.add_argument(
        "--ray-cpus-per-worker", type=float, default=1.0, metavar="K", help="CPUs per worker (1)"
    )
    g.add_argument(
        "--ray-address", metavar="ADDR", help="a Ray cluster to join (default: an embedded Ray)"
    )


__all__ = ["add_ray_train_args", "launch_config"]
