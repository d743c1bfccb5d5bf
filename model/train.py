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
import json
import logging
import os
import random
import shutil
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from manifests.atomic import write_bytes, write_json
from manifests.configs import load_config, to_dict
from model.config import TrainConfig
from model.presets import get_preset
from model.stages import (
    GROUPS,
    IMAGE_MERGE_SIZE,
    STAGES,
    VIDEO_MERGE_SIZE,
    count_parameters,
    make_optimizer,
    make_scheduler,
    split_parameters,
)

log = logging.getLogger("model.train")
VISION_INPUTS = ("pixel_values", "pixel_values_videos")
MAX_EMPTY_DRAWS = 50  # consecutive batches with no usable sample before giving up
REPORT_COLUMNS = ("stage", "recipe", "steps", "first loss", "last loss", "s/step")
REPORT_COLUMNS += ("trainable @ lr", "DiffFP", "skipped", "ranks in sync", "held-out eval")


# --- distributed ------------------------------------------------------------------------------


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False  # we opened the process group (torchrun), not Ray Train

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def on(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.on:
            torch.distributed.barrier()

    def gather(self, obj: Any) -> list:
        """Every rank's ``obj``, in rank order, on every rank."""
        if not self.on:
            return [obj]
        out: list = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out

    def sum(self, values: list[float]) -> list[float]:
        if not self.on:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(t)
        return t.tolist()


def setup_dist() -> Dist:
    """torch.distributed from the launcher's environment (``WORLD_SIZE`` > 1), else one process.
    Under torchrun we open the process group; under Ray Train it is open already and Ray's."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    rank = int(os.environ.get("RANK", 0))
    local = int(os.environ.get("LOCAL_RANK", 0))
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{local}") if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    owns = False
    if world > 1:
        if not torch.distributed.is_initialized():
            torch.distributed.init_process_group("nccl" if cuda else "gloo")
            owns = True
        if not cuda:  # share the cores between the ranks on this machine
            per_node = int(os.environ.get("LOCAL_WORLD_SIZE", world))
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // per_node))
    return Dist(rank, world, local, device, owns)


def teardown_dist(d: Dist) -> None:
    if d.owns_group and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def print0(d: Dist, *args) -> None:
    if d.main:
        print(*args, flush=True)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 where it runs well (``auto``: CUDA with bf16 support), else None (fp32)."""
    if precision == "bf16":
        return torch.bfloat16
    if precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


# --- data -------------------------------------------------------------------------------------


class Stream:
    """A stage's mixture, epoch after epoch, ``take(n)`` samples at a time, with the mixture's
    position for checkpoints."""

    def __init__(self, dataset, holdout: float = 0.0):
        self.ds = dataset
        self.it = None
        self.holdout = holdout  # samples held out for evaluation are never trained on

    def take(self, n: int) -> list[dict]:
        from model.evaluate import is_heldout

        out: list[dict] = []
        fresh = False
        while len(out) < n:
            if self.it is None:
                self.it = iter(self.ds)
            try:
                sample = next(self.it)
                if self.holdout and is_heldout(sample["__key__"], self.holdout):
                    continue  # not "fresh = False": an epoch of held-out samples gives nothing
                out.append(sample)
                fresh = False
            except StopIteration:
                if fresh:
                    raise RuntimeError(
                        f"the mixture {self.ds.recipe.stage!r} gives this rank no samples"
                    ) from None
                self.ds.set_epoch(self.ds.epoch + 1)
                self.it, fresh = None, True
        return out

    def state_dict(self) -> dict:
        return self.ds.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.ds.load_state_dict(state)
        self.it = None


def draw(stream: Stream, collator, batch_size: int) -> tuple[list[dict], int]:
    """Micro-batches from the next ``batch_size`` samples (more batches while every sample of
    one is skipped), and the samples drawn."""
    drawn = 0
    for _ in range(MAX_EMPTY_DRAWS):
        samples = stream.take(batch_size)
        drawn += len(samples)
        micro = collator(samples)
        if micro:
            return micro, drawn
    raise RuntimeError(
        f"{drawn} samples in a row could not be used; skipped: {dict(collator.skipped)}"
    )


# --- one step ---------------------------------------------------------------------------------


def answer_tokens(mb: dict) -> int:
    """Tokens the loss is taken over: labels other than -100, after the causal shift."""
    return int((mb["labels"][:, 1:] != -100).sum())


def train_step(
    model,
    optimizer,
    scheduler,
    micro_batches: list[dict],
    d: Dist | None = None,
    amp: torch.dtype | None = None,
    max_grad_norm: float = 1.0,
    module=None,
) -> dict:
    """One optimizer step over a rank's micro-batches. ``model`` is what to call (the DDP
    wrapper under torch.distributed), ``module`` the bare model (default: ``model``).

    Each micro-batch's mean loss is weighted by its share of the rank's answer tokens, so the
    step's loss is the token mean over them; DDP averages the gradients over ranks on the last
    micro-batch only. A micro-batch with no pixels touches the trained vision and projector
    parameters with a zero term, so every trained parameter gets a gradient on every rank (DDP
    needs that; in stage 1, with the LLM frozen, a text-only micro-batch has nothing else)."""
    d = d or Dist()
    module = module if module is not None else model
    counts = [answer_tokens(mb) for mb in micro_batches]
    total = max(sum(counts), 1)
    visual = [
        p
        for g, named in split_parameters(module).items()
        if g != "llm"
        for _, p in named
        if p.requires_grad
    ]
    device = d.device
    loss_sum, tokens = 0.0, 0
    for i, (mb, n) in enumerate(zip(micro_batches, counts, strict=True)):
        inputs = {k: v.to(device) if torch.is_tensor(v) else v for k, v in mb.items()}
        last = i == len(micro_batches) - 1
        sync = model.no_sync() if hasattr(model, "no_sync") and not last else nullcontext()
        with sync:
            with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                loss = model(**inputs, use_cache=False).loss
            # a micro-batch without answer tokens (none reach here: the collator skips them)
            weighted = loss.float() * (n / total) if n else loss.float().nan_to_num() * 0.0
            if visual and not any(k in inputs for k in VISION_INPUTS):
                weighted = weighted + sum(p.sum() for p in visual) * 0.0
            weighted.backward()
        loss_sum += float(loss.detach()) * n
        tokens += int(inputs["attention_mask"].sum())
    trained = [p for group in optimizer.param_groups for p in group["params"]]
    grad_norm = (
        float(torch.nn.utils.clip_grad_norm_(trained, max_grad_norm))
        if max_grad_norm > 0
        else float("nan")
    )
    lrs = {g["group"]: g["lr"] for g in optimizer.param_groups}
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    loss_sum, n_all, tokens_all = d.sum([loss_sum, float(sum(counts)), float(tokens)])
    return {
        "loss": loss_sum / max(n_all, 1.0),
        "answer_tokens": int(n_all),
        "tokens": int(tokens_all),
        "micro_batches": len(micro_batches),
        "grad_norm": grad_norm,
        "lr": lrs,
    }


# --- checkpoints ------------------------------------------------------------------------------


def _rng_state() -> dict:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tmp_dir(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def _publish(tmp: Path, final: Path) -> None:
    """Rename a finished directory into place (replacing an older one of the same name)."""
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


def save_resumable(
    d: Dist,
    stage_dir: Path,
    step: int,
    module,
    processor,
    optimizer,
    scheduler,
    stream: Stream,
    keep: int,
    start: str = "",
) -> Path | None:
    """A resumable checkpoint of ``step``: rank 0 writes the weights, optimizer and scheduler
    (identical on every rank) and every rank's mixture position and RNG state, into a temporary
    directory renamed into place; then ``latest`` points at it and older ones go."""
    from model.build import save_checkpoint

    mixture = d.gather(stream.state_dict())
    rng = d.gather(_rng_state())
    path = None
    if d.main:
        ckpts = stage_dir / "checkpoints"
        path = ckpts / f"step-{step:06d}"
        tmp = _tmp_dir(path)
        save_checkpoint(module, processor, tmp)
        trainer = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
        torch.save({**trainer, "rng": rng}, tmp / "trainer_state.pt")
        state = {"step": step, "world_size": d.world, "mixture": mixture, "start": start}
        write_json(tmp / "state.json", state)
        _publish(tmp, path)
        write_bytes(ckpts / "latest", path.name.encode())
        for old in sorted(ckpts.glob("step-*"))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    d.barrier()
    return path


def latest_checkpoint(stage_dir: Path) -> Path | None:
    pointer = stage_dir / "checkpoints" / "latest"
    if not pointer.is_file():
        return None
    path = pointer.parent / pointer.read_text().strip()
    return path if (path / "state.json").is_file() else None


def load_trainer_state(path: Path, d: Dist, optimizer, scheduler, stream: Stream) -> int:
    """Restore optimizer, scheduler, this rank's RNG and mixture position; return the step."""
    state = json.loads((path / "state.json").read_text())
    if state["world_size"] != d.world:
        raise ValueError(
            f"{path} was written by {state['world_size']} ranks, this run has {d.world}: resume "
            "with the same number of processes (each rank's mixture position is its own)"
        )
    trainer = torch.load(path / "trainer_state.pt", map_location="cpu", weights_only=True)
    optimizer.load_state_dict(trainer["optimizer"])
    scheduler.load_state_dict(trainer["scheduler"])
    _set_rng_state(trainer["rng"][d.rank])
    stream.load_state_dict(state["mixture"][d.rank])
    return int(state["step"])


# --- a stage ----------------------------------------------------------------------------------


def stage_recipes(cfg: TrainConfig) -> list[str]:
    return [cfg.stage(n).recipe for n in STAGES if cfg.stage(n).recipe]


def _corpus(cfg: TrainConfig):
    from model.tokenizer import corpus_from_recipes

    def read() -> list[str]:
        texts: list[str] = []
        for recipe in dict.fromkeys(stage_recipes(cfg)):  # each recipe once
            try:
                texts += corpus_from_recipes(
                    [recipe], cfg.model.tokenizer_records, cfg.data.holdout_fraction
                )
            except (FileNotFoundError, ValueError) as exc:
                log.warning("tokenizer: not reading %s: %s", recipe, exc)
        if not texts:
            raise RuntimeError("no text to train the tokenizer on: no recipe could be read")
        return texts

    return read


def starting_point(cfg: TrainConfig, n: int, d: Dist, fresh: bool) -> Path:
    """The checkpoint stage ``n`` starts from (module docs); stage 1 without ``model.init``
    builds ``output/init`` first (rank 0; the others wait and load it)."""
    out = Path(cfg.output)
    if n > 1:
        prev = out / f"stage{n - 1}" / "final"
        if prev.is_dir():
            return prev
        if cfg.model.init:
            return Path(cfg.model.init)
        raise FileNotFoundError(
            f"stage {n} starts from stage {n - 1}'s weights, but {prev} does not exist: run "
            f"stage {n - 1} first (--stage all), or --set model.init=CHECKPOINT"
        )
    if cfg.model.init:
        return Path(cfg.model.init)
    init = out / "init"
    if d.main and (fresh or not (init / "config.json").is_file()):
        from model.build import build_from_preset, save_checkpoint
        from model.tokenizer import load_tokenizer

        m = cfg.model
        tok = load_tokenizer(m.tokenizer) if m.tokenizer else None
        tmp = _tmp_dir(init)
        if m.init_llm:  # the paper's start: Qwen2.5 + SigLIP, a new projector
            from model.init_parts import build_from_parts

            model, processor, parts = build_from_parts(
                m.init_llm,
                m.init_vision,
                m.preset,
                tokenizer=tok,
                seed=cfg.seed,
                attn_implementation=m.attn_implementation,
            )
            save_checkpoint(model, processor, tmp)
            write_json(tmp / "parts.json", parts)
        else:
            model, processor = build_from_preset(
                m.preset,
                tokenizer=tok,
                corpus=_corpus(cfg),
                vocab_size=m.vocab_size or None,
                seed=cfg.seed,
                attn_implementation=m.attn_implementation,
            )
            save_checkpoint(model, processor, tmp)
        _publish(tmp, init)
        log.info(
            "built the stage-1 start in %s (%s, vocabulary %d)",
            init,
            f"from {m.init_llm} + {m.init_vision}" if m.init_llm else f"{m.preset} preset",
            len(processor.tokenizer),
        )
    d.barrier()
    return init


def collate_config(cfg: TrainConfig, n: int):
    from model.collate import CollateConfig

    p = get_preset(cfg.model.preset)
    return CollateConfig(
        max_length=cfg.data.max_length or p.max_length,
        max_vision_tokens=cfg.data.max_vision_tokens or p.max_vision_tokens,
        video_merge_size=VIDEO_MERGE_SIZE,
        image_merge_size=IMAGE_MERGE_SIZE,
        use_token_compression=bool(cfg.stage(n).token_compression),
        diff_threshold=cfg.data.diff_threshold,
        tokens_per_batch=cfg.data.tokens_per_batch or p.tokens_per_batch,
    )


def _checksum(module) -> float:
    with torch.no_grad():
        return float(sum(p.detach().double().sum() for p in module.parameters()))


def run_stage(cfg: TrainConfig, n: int, d: Dist, resume: bool) -> dict:
    """Train stage ``n``; returns its result (also ``stage{n}/final/result.json``)."""
    import mixtures
    from model.build import load_checkpoint, save_checkpoint
    from model.collate import Collator

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
        source, start = ckpt, json.loads((ckpt / "state.json").read_text()).get("start", "")
    tokenizer = None
    if cfg.model.tokenizer and cfg.model.init and Path(source) == Path(cfg.model.init):
        from model.tokenizer import load_tokenizer

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
    collator = Collator(processor, collate_config(cfg, n))
    step = load_trainer_state(ckpt, d, optimizer, scheduler, stream) if ckpt else 0
    metrics_path = stage_dir / "metrics.jsonl"
    if d.main:
        stage_dir.mkdir(parents=True, exist_ok=True)
        _truncate_metrics(metrics_path, step)
    params = count_parameters(model)
    trainable = {g: params[g]["trainable"] for g in GROUPS}
    print0(
        d,
        f"stage {n}: {sc.recipe} from {source}, steps {step}->{sc.steps}, trainable "
        + ", ".join(f"{g} {trainable[g]:,} @ {lrs[g]:g}" for g in GROUPS)
        + f", DiffFP {'on' if sc.token_compression else 'off'}, {d.world} rank(s)",
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
    losses = [r["loss"] for r in _read_metrics(metrics_path)] if d.main else []
    times = [r["step_time_s"] for r in _read_metrics(metrics_path)][1:] if d.main else []
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
        "parameters": params,
        "skipped": dict(collator.skipped),
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
        tmp = _tmp_dir(final)
        save_checkpoint(model, processor, tmp)
        write_json(tmp / "result.json", result)
        _publish(tmp, final)
        shutil.rmtree(stage_dir / "checkpoints", ignore_errors=True)
    d.barrier()
    return result


def evaluate_heldout(cfg: TrainConfig, recipe: str, model, processor, collator, amp) -> dict:
    """Loss per task on the stage's held-out samples, and grounding mIoU on a few of them."""
    from model.evaluate import evaluate_grounding, evaluate_loss, heldout_samples

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


def _read_metrics(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _truncate_metrics(path: Path, step: int) -> None:
    """Keep the rows of steps up to ``step`` (a resumed run rewrites the later ones)."""
    rows = [r for r in _read_metrics(path) if r["step"] <= step]
    write_bytes(path, "".join(json.dumps(r) + "\n" for r in rows).encode())


# --- report -----------------------------------------------------------------------------------


def loss_plot_png(stages: dict[int, list[float]]) -> bytes:
    """Loss per step, stages side by side on one axis (Agg canvas, no pyplot)."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    offset = 0
    for n, losses in sorted(stages.items()):
        xs = range(offset + 1, offset + len(losses) + 1)
        ax.plot(list(xs), losses, label=f"stage {n}")
        if offset:
            ax.axvline(offset + 0.5, color="#9e9e9e", lw=0.8, ls="--")
        offset += len(losses)
    ax.set_xlabel("step (stages in order)")
    ax.set_ylabel("loss (answer tokens)")
    ax.grid(alpha=0.3)
    if stages:
        ax.legend()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def _eval_cell(ev: dict | None) -> str:
    """Held-out loss per task and grounding mIoU, as one table cell."""
    if not ev or "loss" not in ev:
        return ""
    parts = [f"{task} {loss:.3f}" for task, loss in sorted(ev["loss_by_task"].items())]
    g = ev.get("grounding")
    if g:
        parts.append(f"grounding mIoU {g['mIoU']:.1f} (n={g['n']}, unparsed {g['unparsed']})")
    return f"{ev['samples']} samples: " + "; ".join(parts)


def write_report(cfg: TrainConfig, results: dict[int, dict]) -> Path:
    """``output/report.html``: a table of the stages (``results``, and those finished by
    earlier runs) and the loss curves (also ``loss.png``)."""
    import base64
    import html

    out = Path(cfg.output)
    results = dict(results)
    for n in STAGES:  # stages finished by earlier runs too
        done = out / f"stage{n}" / "final" / "result.json"
        if n not in results and done.is_file():
            results[n] = json.loads(done.read_text())
    curves = {
        n: [r["loss"] for r in _read_metrics(out / f"stage{n}" / "metrics.jsonl")]
        for n in STAGES
        if (out / f"stage{n}" / "metrics.jsonl").is_file()
    }
    png = loss_plot_png(curves)
    write_bytes(out / "loss.png", png)

    def fmt(v: Any) -> str:
        return "-" if v is None else f"{v:.4f}" if isinstance(v, float) else html.escape(str(v))

    def row(n: int, r: dict) -> list:
        lrs = ", ".join(f"{g} {r['parameters'][g]['trainable']:,} @ {r['lr'][g]:g}" for g in GROUPS)
        on = "on" if r["token_compression"] else "off"
        skipped = json.dumps(r["skipped"]) if r["skipped"] else ""
        loss = [r["first_loss"], r["last_loss"], r["mean_step_time_s"]]
        return [
            n,
            r["recipe"],
            r["steps"],
            *loss,
            lrs,
            on,
            skipped,
            "yes" if r["in_sync"] else "NO",
            _eval_cell(r.get("eval")),
        ]

    cells = [row(n, r) for n, r in sorted(results.items())]
    rows = "".join("<tr>" + "".join(f"<td>{fmt(v)}</td>" for v in c) + "</tr>" for c in cells)
    head = "".join(f"<th>{h}</th>" for h in REPORT_COLUMNS)
    page = f"""<!doctype html><html><head><meta charset="utf-8">
<title>{html.escape(cfg.name)}: training report</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}</style></head><body>
<h1>{html.escape(cfg.name)}</h1>
<p>preset <b>{html.escape(cfg.model.preset)}</b>, output {html.escape(str(out))}</p>
<table><tr>{head}</tr>{rows}</table>
<h2>Loss per stage</h2>
<img alt="loss per stage" src="data:image/png;base64,{base64.b64encode(png).decode()}">
<h2>Config</h2><pre>{html.escape(json.dumps(to_dict(cfg), indent=2))}</pre>
</body></html>
"""
    path = out / "report.html"
    write_bytes(path, page.encode())
    return path


# --- entry points -----------------------------------------------------------------------------


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


def build_parser() -> argparse.ArgumentParser:
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
    from model.ray_launch import add_ray_train_args

    add_ray_train_args(p)
    return p


def launch_with_ray(args: argparse.Namespace, overrides: list[str]) -> dict:
    """The config from ``args`` and ``overrides``, trained on Ray Train workers."""
    from model.ray_launch import launch_config

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


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"model.train: error: {exc}", file=sys.stderr)
        sys.exit(1)
