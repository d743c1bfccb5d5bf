"""Train a compact VideoLLaMA3 through the paper's four stages on our mixtures.

    python -m model.train configs/train_compact.yaml --stage all
    python -m model.train configs/train_compact.yaml --stage 3 --resume
    torchrun --nproc-per-node 2 -m model.train configs/train_compact.yaml --stage 2
    python -m model.train configs/train_compact.yaml --stage 2 --ray-workers 2   # Ray Train

One loop for every stage. A stage starts from the previous stage's ``final`` checkpoint (stage 1:
``model.init``; or Qwen2.5 + SigLIP checkpoints, ``model.init_llm`` + ``model.init_vision``,
assembled by :mod:`model.init_parts`; or a fresh ``model.preset`` with a BPE tokenizer trained on
the recipes' text),
freezes and sets learning rates per group as the paper does (:mod:`model.stages`), streams its
mixture recipe (:func:`mixtures.open_stage`: seeded, rank-aware, resumable) through the collator
(:mod:`model.collate`) and takes ``steps`` AdamW steps with a warm-up + cosine schedule. Each step
draws ``batch_size`` samples per rank ``grad_accum`` times; the collator packs them into
length-bucketed micro-batches whose losses are weighted by their answer tokens and accumulated
(gradients are all-reduced once per step under DDP). bf16 autocast on CUDA.

Under ``torchrun`` or Ray Train (``--ray-workers``, :mod:`model.ray_launch`; ``WORLD_SIZE`` > 1)
it runs torch.distributed data parallel: gloo on CPU, nccl on GPU, one DDP-wrapped model per rank,
each rank reading its own share of the mixture.

Everything lands in ``output``::

    init/                      the stage-1 starting point built here (model, processor, tokenizer)
    stage{N}/checkpoints/      resumable checkpoints: step-NNNNNN/ (model, processor,
                               trainer_state.pt: optimizer, scheduler, RNG; state.json: step,
                               every rank's mixture position) and ``latest``
    stage{N}/final/            the stage's weights and processor (what stage N+1 starts from) and
                               result.json; renamed into place last, so it marks the stage done
    stage{N}/metrics.jsonl     one row per step: loss, learning rates, tokens, step time
    summary.json, report.html  per-stage results and the loss curves

``--resume`` skips finished stages and continues an interrupted one from its latest checkpoint
(same model, optimizer, scheduler, RNG and mixture position: the next step's loss is the one an
uninterrupted run would have had, with the same world size).
"""

from __future__ import annotations

import argparse
import logging
import sys

from manifests.configs import load_config
from model.config import TrainConfig
from model.loop import run
from model.ray_launch import add_ray_train_args, launch_config
from model.stages import STAGES

# The loop itself is model/loop.py, so that Ray Train workers (model/ray_launch.py) can import it
# without importing this command line, which imports the Ray launcher: one direction only.


def parse_stages(text: str) -> list[int]:
    """``all`` -> [1, 2, 3, 4]; ``3`` -> [3]; ``2-4`` or ``2,3`` for a span."""
    text = str(text).strip()
    if text == "all":
        return list(STAGES)
    try:
        if "-" in text:
            a, b = (int(x) for x in text.split("-", 1))
            stages = list(range(a, b + 1))
        else:
            stages = sorted({int(x) for x in text.split(",")})
    except ValueError:
        stages = []
    if not stages or any(s not in STAGES for s in stages):
        raise ValueError(f"--stage {text!r}: use all, 1, 2, 3, 4, a span 2-4 or a list 2,3")
    return stages


def build_parser() -> argparse.ArgumentParser:
    """``python -m model.train``'s arguments (``vl3data train`` has the same)."""
    p = argparse.ArgumentParser(
        prog="python -m model.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", nargs="+", help="YAML config(s), e.g. configs/train_compact.yaml")
    p.add_argument("--stage", default="all", help="all (1->4), 1, 2, 3, 4, a span 2-4")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoints")
    p.add_argument("--set", action="append", metavar="FIELD=VALUE", help="override a field")
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR")
    add_ray_train_args(p)
    return p


def launch_with_ray(args: argparse.Namespace, overrides: list[str]) -> dict:
    """The config from ``args`` and ``overrides``, trained on Ray Train workers."""
    return launch_config(
        load_config(TrainConfig, args.config, overrides),
        parse_stages(args.stage),
        resume=args.resume,
        workers=args.ray_workers,
        use_gpu=args.ray_gpu,
        cpus_per_worker=args.ray_cpus_per_worker,
        address=args.ray_address,
    )


def main(argv: list[str] | None = None) -> dict:
    """Parse ``argv``, train, return the metrics (see :func:`run`)."""
    args = build_parser().parse_args(argv)
    overrides = list(args.set or [])
    if args.log_level:
        overrides.append(f"log_level={args.log_level}")
    if args.ray_address and not args.ray_workers:
        raise SystemExit("model.train: --ray-address goes with --ray-workers N")
    if args.ray_workers:
        return launch_with_ray(args, overrides)
    cfg = load_config(TrainConfig, args.config, overrides)
    stages = parse_stages(args.stage)
    logging.basicConfig(
        level=getattr(logging, cfg.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    return run(cfg, stages, resume=args.resume)


__all__ = ["build_parser", "launch_with_ray", "main", "parse_stages"]


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"model.train: error: {exc}", file=sys.stderr)
        sys.exit(1)
