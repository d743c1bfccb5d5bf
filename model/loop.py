"""The one train loop: :func:`run` runs stages in order, :func:`run_stage` trains one.

Every launcher ends here: ``python -m model.train`` and ``vl3data train`` in one process or under
``torchrun``, each Ray Train worker (:mod:`model.ray_launch`) and the build's train nodes. It
imports neither the command line nor the Ray launcher, so the Ray workers can import it and the
launcher can stay above it. The pieces it strings together have their own modules:
:mod:`model.distributed` (ranks), :mod:`model.starting_point` (the weights a stage starts from),
:mod:`model.stream` (the data), :mod:`model.step` (one optimizer step),
:mod:`model.checkpoints` (resume), :mod:`model.metrics` and :mod:`model.train_report` (what it
leaves behind); the stage policies are :mod:`model.stages`.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

import mixtures
from engine.progress import status as show_status
from manifests.atomic import write_json
from manifests.configs import to_dict
from model.build import load_checkpoint, save_checkpoint
from model.checkpoints import (
    checkpoint_start,
    latest_checkpoint,
    load_trainer_state,
    publish,
    save_resumable,
    tmp_dir,
)
from model.config import TrainConfig
from model.diffp import grey_levels
from model.distributed import Dist, print0, setup_dist, teardown_dist
from model.evaluate import evaluate_grounding, evaluate_loss
from model.heldout import heldout_samples
from model.metrics import read_metrics, truncate_metrics
from model.precision import autocast_dtype
from model.presets import get_preset
from model.stages import GROUPS, count_parameters, make_optimizer, make_scheduler
from model.starting_point import starting_point
from model.step import train_step
from model.stream import Stream, draw, stage_collator
from model.tokenizer import load_tokenizer
from model.train_report import write_report

log = logging.getLogger(__name__)


def _checksum(module) -> float:
    """A sum of every weight: equal on every rank when DDP kept them in sync."""
    with torch.no_grad():
        return float(sum(p.detach().double().sum() for p in module.parameters()))


def run_stage(cfg: TrainConfig, n: int, d: Dist, resume: bool) -> dict:
    """Train stage ``n``; returns its result (also ``stage{n}/final/result.json``)."""
    sc = cfg.stage(n)
    stage_dir = Path(cfg.output) / f"stage{n}"
    final = stage_dir / "final"
    if resume and (final / "result.json").is_file():
        print0(d, f"stage {n}: done already ({final})")
        return json.loads((final / "result.json").read_text())
    ckpt = latest_checkpoint(stage_dir) if resume else None
    if d.main and ckpt is None and stage_dir.exists():
        shutil.rmtree(stage_dir)  # a fresh start: no stale checkpoints or metrics
    d.barrier()
    if ckpt is None:
        source = start = starting_point(cfg, n, d, fresh=not resume)
    else:
        source, start = ckpt, checkpoint_start(ckpt)
    tokenizer = None
    if cfg.model.tokenizer and cfg.model.init and Path(source) == Path(cfg.model.init):
        tokenizer = load_tokenizer(cfg.model.tokenizer)  # a checkpoint of elsewhere + its tokenizer
    model, processor = load_checkpoint(
        source,
        preset=get_preset(cfg.model.preset),
        tokenizer=tokenizer,
        attn_implementation=cfg.model.attn_implementation,
    )
    model.to(d.device).train()
    lrs = sc.lrs()
    optimizer = make_optimizer(model, lrs, cfg.train.weight_decay)
    scheduler = make_scheduler(optimizer, sc.steps, sc.warmup_ratio)
    stream = Stream(mixtures.open_stage(sc.recipe), cfg.data.holdout_fraction)
    collator = stage_collator(processor, cfg, n)
    step = load_trainer_state(ckpt, d, optimizer, scheduler, stream) if ckpt else 0
    metrics_path = stage_dir / "metrics.jsonl"
    if d.main:
        stage_dir.mkdir(parents=True, exist_ok=True)
        truncate_metrics(metrics_path, step)
    params = count_parameters(model)
    trainable = {g: params[g]["trainable"] for g in GROUPS}
    print0(
        d,
        f"stage {n}: {sc.recipe} from {source}, steps {step}->{sc.steps}, trainable "
        + ", ".join(f"{g} {trainable[g]:,} @ {lrs[g]:g}" for g in GROUPS)
        + (
            f", DiffFP on (threshold {cfg.data.diff_threshold}: "
            f"{grey_levels(collator.cfg.diff_threshold):.2f} grey levels)"
            if sc.token_compression
            else ", DiffFP off"
        )
        + f", image tokens merged {collator.cfg.image_merge_size}x{collator.cfg.image_merge_size}"
        + f", video {collator.cfg.video_merge_size}x{collator.cfg.video_merge_size}"
        + f", streaming frames as {collator.cfg.stream_frames}"
        + f", {d.world} rank(s)",
    )
    ddp = model
    if d.on:
        from torch.nn.parallel import DistributedDataParallel

        ddp = DistributedDataParallel(
            model, device_ids=[d.device.index] if d.device.type == "cuda" else None
        )
    amp = autocast_dtype(cfg.train.precision, d.device)
    stop = cfg.train.stop_after  # steps of this run, counted from where it started or resumed
    first_step = step
    t_first = time.perf_counter()
    stopped = False
    with open(metrics_path, "a") if d.main else nullcontext() as sink:
        while step < sc.steps:
            t0 = time.perf_counter()
            micro: list[dict] = []
            drawn = 0
            for _ in range(cfg.train.grad_accum):
                got, k = draw(stream, collator, cfg.train.batch_size)
                micro += got
                drawn += k
            row = train_step(
                ddp, optimizer, scheduler, micro, d, amp, cfg.train.max_grad_norm, module=model
            )
            step += 1
            row = {
                "stage": n,
                "step": step,
                **row,
                "samples": int(d.sum([float(drawn)])[0]),
                "step_time_s": round(time.perf_counter() - t0, 4),
            }
            if d.main:
                sink.write(json.dumps(row) + "\n")
                sink.flush()
                rate = (step - first_step) / (time.perf_counter() - t_first)
                show_status(
                    f"stage {n}: step {step}/{sc.steps}, {rate:.2f} steps/s, "
                    f"ETA {(sc.steps - step) / rate:.0f} s",
                    say=False,
                    force=step == sc.steps,
                )
                if step % cfg.train.log_every == 0 or step == sc.steps:
                    lr = " ".join(f"{g} {v:.2e}" for g, v in row["lr"].items())
                    print0(
                        d,
                        f"stage {n} step {step}/{sc.steps} loss {row['loss']:.4f} lr {lr} "
                        f"tokens {row['tokens']} {row['step_time_s']:.2f}s",
                    )
            at_stop = stop and step - first_step >= stop and step < sc.steps
            if step < sc.steps and (step % cfg.train.checkpoint_every == 0 or at_stop):
                save_resumable(
                    d,
                    stage_dir,
                    step,
                    model,
                    processor,
                    optimizer,
                    scheduler,
                    stream,
                    cfg.train.keep_checkpoints,
                    str(start),
                )
            if at_stop:
                stopped = True
                break
    checksums = d.gather(_checksum(model))
    losses = [r["loss"] for r in read_metrics(metrics_path)] if d.main else []
    times = [r["step_time_s"] for r in read_metrics(metrics_path)][1:] if d.main else []
    result = {
        "stage": n,
        "recipe": sc.recipe,
        "start": str(start),
        "steps": step,
        "done": not stopped,
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "losses": losses,
        "mean_step_time_s": sum(times) / len(times) if times else None,
        "lr": lrs,
        "token_compression": bool(sc.token_compression),
        "diff_threshold": cfg.data.diff_threshold,  # its reading (model.diffp)
        "image_merge_size": collator.cfg.image_merge_size,
        "video_merge_size": collator.cfg.video_merge_size,
        "stream_frames": collator.cfg.stream_frames,  # a clip (video) or images
        "parameters": params,
        "skipped": dict(collator.skipped),
        "fixed": dict(collator.fixed),  # samples used after a repair (model.collate)
        "world_size": d.world,
        "device": str(d.device),
        "autocast": str(amp).removeprefix("torch.") if amp else "fp32",
        "param_checksums": checksums,
        "in_sync": len(set(checksums)) == 1,
    }
    if not result["in_sync"]:
        log.error("stage %d: ranks hold different weights: %s", n, checksums)
    if cfg.data.holdout_fraction and not stopped and d.main:
        result["eval"] = evaluate_heldout(cfg, sc.recipe, model, processor, collator, amp)
        print0(d, f"stage {n}: held-out {json.dumps(result['eval'], default=str)[:400]}")
    if stopped:
        print0(d, f"stage {n}: stopped at step {step} (train.stop_after); --resume goes on")
        return result
    result["final"] = str(final)
    if d.main:
        tmp = tmp_dir(final)
        save_checkpoint(model, processor, tmp)
        write_json(tmp / "result.json", result)
        publish(tmp, final)
        shutil.rmtree(stage_dir / "checkpoints", ignore_errors=True)
    d.barrier()
    return result


def evaluate_heldout(cfg: TrainConfig, recipe: str, model, processor, collator, amp) -> dict:
    """Loss per task on the stage's held-out samples, and grounding mIoU on a few of them."""
    samples = heldout_samples(recipe, cfg.data.holdout_fraction, cfg.data.eval_limit)
    out: dict = {"samples": len(samples)}
    if not samples:
        return out
    loss = evaluate_loss(model, collator, samples, amp=amp)
    out["loss"] = loss["loss"]
    out["loss_by_task"] = {k: v["loss"] for k, v in loss["by_task"].items()}
    if cfg.data.eval_grounding:
        g = evaluate_grounding(
            model, processor, samples, collator=collator, amp=amp, limit=cfg.data.eval_grounding
        )
        if g["n"]:
            out["grounding"] = {
                k: g[k] for k in ("n", "mIoU", "R@0.3", "R@0.5", "R@0.7", "unparsed")
            }
    model.train()
    return out


def run(cfg: TrainConfig, stages: list[int], resume: bool = False) -> dict:
    """Run ``stages`` in order (each from the previous one's weights); returns
    ``{"stages": {n: result}, "report": path, "output": dir}`` (also ``summary.json``)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    cfg.check_runnable(stages)
    d = setup_dist()
    try:
        out = Path(cfg.output)
        if d.main:
            out.mkdir(parents=True, exist_ok=True)
            write_json(out / "config.json", to_dict(cfg))
        results: dict[int, dict] = {}
        for n in stages:
            results[n] = run_stage(cfg, n, d, resume)
            if not results[n]["done"]:
                break
        summary: dict[str, Any] = {"output": str(out), "stages": results}
        if d.main:
            summary["report"] = str(write_report(cfg, results))
            write_json(out / "summary.json", summary)
            print0(d, f"report: {summary['report']}")
        d.barrier()
        return summary
    finally:
        teardown_dist(d)


__all__ = ["evaluate_heldout", "run", "run_stage"]
