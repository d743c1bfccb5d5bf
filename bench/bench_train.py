"""Our training step vs a bare forward/backward loop on the same batches (target >= 0.9x).

One model (a preset built offline by :mod:`model.build`, ``small`` by default), one list of
micro-batches produced once, before any timing, by the trainer's own data path
(:class:`model.train.Stream` over a mixture recipe, :func:`model.train.draw`, the
:class:`~model.collate.Collator` with the trainer's collate config for the stage: DiffFP on in
stages 3-4), and the stage's optimizer (:func:`model.stages.make_optimizer`: AdamW over the same
parameter groups at the paper's rates). Each side has its own copy of the model; every round
both start from the same weights (checked: a checksum before each round, and the first step's
loss must be the same on both sides) with a fresh optimizer, then take ``--steps`` steps; the
first ``--warmup-rounds`` rounds are a warm-up and not timed. The two sides take each step back
to back, on the same micro-batches, in alternating order, so load from other processes on the
box hits both alike; wall and CPU time (``time.process_time``) are taken per step.

- ours: :func:`model.train.train_step` (answer-token weighting, the zero term for pixel-free
  micro-batches, gradient clipping, warm-up + cosine scheduler, token accounting);
- bare: for each micro-batch of the step ``model(**mb, use_cache=False).loss.backward()``,
  then ``opt.step(); opt.zero_grad()``: the same micro-batches and optimizer steps, nothing
  else (``use_cache=False`` on both sides, so neither builds a KV cache).

The samples are a mixture of every kind the demo builds when its shard sets are under ``out/``
(short captions, video captions, streaming, grounding, text: ``make demo``); otherwise a small
set written to a temporary directory (``--data temp`` forces it: the real sample photos
captioned, a 3-frame video of them, text-only conversations). Prints samples/s, tokens/s
(non-pad tokens) and the ratio ours / bare of throughput (= bare / ours of time), over all timed
steps, in wall and CPU time, and the median of the per-step ratios.

    .venv/bin/python bench/bench_train.py [--preset small] [--stage 3] [--steps 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEMO_SOURCES = [  # (name, path, modality): what `make demo` writes
    ("short_captions", "out/demo_syn7m_captions/short", "image"),
    ("video_caption", "out/demo_videos/caption", "video"),
    ("video_streaming", "out/demo_videos/streaming", "video"),
    ("video_grounding", "out/demo_videos/grounding", "video"),
    ("text", "mixtures/recipes/demo_text.jsonl", "text"),
]
CAPTIONS = {
    "astronaut": "An astronaut in a white suit stands before a flag.",
    "chelsea": "A ginger cat with green eyes looks at the camera.",
    "coffee": "A cup of coffee with a leaf drawn in the foam.",
    "rocket": "A rocket stands on the launch pad.",
}
TEXT = [
    ("What is the capital of France?", "The capital of France is Paris."),
    ("How many legs does a spider have?", "A spider has eight legs."),
]


def _jpeg(photo, side: int = 128) -> bytes:
    import numpy as np
    from PIL import Image

    from vl3data.sample_media import jpeg_bytes

    im = Image.fromarray(photo)
    im.thumbnail((side, side))
    return jpeg_bytes(np.asarray(im))


def _write_set(out: Path, modality: str, samples: list[dict]) -> Path:
    from manifests.dataset import write_dataset_json
    from manifests.shards import ShardSetWriter

    w = ShardSetWriter(out, "main", max_count=100, max_bytes=10**9)
    for s in samples:
        w.write(s)
    write_dataset_json(
        out,
        name=out.name,
        modality=modality,
        task="caption",
        shards=w.close(),
        config={},
        config_hash="bench",
    )
    return out


def write_fallback_sets(root: Path) -> list[tuple[str, str, str]]:
    """Captioned real photos, one 3-frame video of them and text-only turns, in ``root``."""
    from vl3data.sample_media import real_photos

    photos = real_photos()
    images = []
    for name, caption in CAPTIONS.items():
        rec = {
            "image": [f"{name}.jpg"],
            "conversations": [
                {"from": "human", "value": "<image>\nDescribe the image briefly."},
                {"from": "gpt", "value": caption},
            ],
        }
        images.append(
            {"__key__": name, "jpg": _jpeg(photos[name]), "json": json.dumps(rec).encode()}
        )
    names = [f"clip.f{i:04d}.jpg" for i in range(3)]
    rec = {
        "video": ["clip"],
        "frames": names,
        "timestamps": [0.0, 1.0, 2.0],
        "conversations": [
            {"from": "human", "value": "<video>\nDescribe the video."},
            {"from": "gpt", "value": "A cat sits still, then a cup of coffee appears."},
        ],
    }
    video = {"__key__": "clip", "json": json.dumps(rec).encode()}
    for n, p in zip(names, ("chelsea", "chelsea", "coffee"), strict=True):
        video[n.split(".", 1)[1]] = _jpeg(photos[p])
    text = root / "text.jsonl"
    turns = [[{"from": "human", "value": q}, {"from": "gpt", "value": a}] for q, a in TEXT]
    text.write_text("".join(json.dumps({"conversations": t}) + "\n" for t in turns))
    return [
        ("images", str(_write_set(root / "images", "image", images)), "image"),
        ("video", str(_write_set(root / "video", "video", [video])), "video"),
        ("text", str(text), "text"),
    ]


def write_recipe(root: Path, data: str = "auto") -> tuple[Path, str]:
    """A recipe over the demo's sets (``auto``: when all are there) or the fallback sets
    (``temp``); and which."""
    demo = [(n, ROOT / p, m) for n, p, m in DEMO_SOURCES]
    there = all((p / "dataset.json").is_file() or p.suffix == ".jsonl" for _, p, _ in demo)
    if data == "auto" and there:
        sources, kind = [(n, str(p), m) for n, p, m in demo], "demo shard sets under out/"
    else:
        sources, kind = write_fallback_sets(root), "fallback sets written to a temp dir"
    recipe = {
        "stage": "bench_train",
        "seed": 0,
        "groups": [
            {"name": n, "sources": [{"name": n, "path": p, "modality": m}]} for n, p, m in sources
        ],
    }
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path, kind


def checksum(model) -> float:
    with torch.no_grad():
        return float(sum(p.detach().double().sum() for p in model.parameters()))


class Ours:
    """The trainer's step: :func:`model.train.train_step` with the stage's optimizer and its
    warm-up + cosine scheduler."""

    def __init__(self, model, lrs, steps: int, warmup_ratio: float):
        from model.stages import make_optimizer, make_scheduler

        self.model = model
        self.opt = make_optimizer(model, lrs)
        self.sched = make_scheduler(self.opt, steps, warmup_ratio)

    def step(self, micro: list[dict], counts: list[int]) -> float:
        from model.step import train_step

        return train_step(self.model, self.opt, self.sched, micro)["loss"]


class Bare:
    """A bare loop: forward, backward per micro-batch, one optimizer step (the same AdamW
    groups); the loss is read only to check that both sides start alike."""

    def __init__(self, model, lrs, steps: int, warmup_ratio: float):
        from model.stages import make_optimizer

        self.model = model
        self.opt = make_optimizer(model, lrs)

    def step(self, micro: list[dict], counts: list[int]) -> float:
        total, loss_sum = max(sum(counts), 1), 0.0
        for mb, n in zip(micro, counts, strict=True):
            loss = self.model(**mb, use_cache=False).loss
            loss.backward()
            loss_sum += loss.item() * n / total
        self.opt.step()
        self.opt.zero_grad()
        return loss_sum


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="small", help="tiny | small")
    ap.add_argument("--stage", type=int, default=3, help="whose rates, freezing and DiffFP")
    ap.add_argument("--steps", type=int, default=8, help="steps per round")
    ap.add_argument("--batch-size", type=int, default=8, help="samples drawn per step")
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds")
    ap.add_argument("--data", choices=("auto", "temp"), default="auto", help="temp: never out/")
    ap.add_argument("--warmup-rounds", type=int, default=1, help="untimed rounds first")
    args = ap.parse_args(argv)

    from transformers.utils import logging as hf_logging

    import mixtures
    from model.build import build_from_preset
    from model.collate import Collator
    from model.config import ModelConfig, TrainConfig
    from model.stages import count_parameters
    from model.step import answer_tokens
    from model.stream import Stream, collate_config, draw
    from model.tokenizer import corpus_from_recipes

    hf_logging.disable_progress_bar()
    with tempfile.TemporaryDirectory() as tmp:
        recipe, kind = write_recipe(Path(tmp), args.data)
        cfg = TrainConfig(model=ModelConfig(preset=args.preset))
        sc = cfg.stage(args.stage)
        model, processor = build_from_preset(
            args.preset, corpus=lambda: corpus_from_recipes([recipe]), seed=0
        )
        model.train()
        collator = Collator(processor, collate_config(cfg, args.stage))
        stream = Stream(mixtures.open_stage(recipe))
        t0 = time.perf_counter()
        steps_mb, drawn = [], 0
        for _ in range(args.steps):
            micro, k = draw(stream, collator, args.batch_size)
            steps_mb.append(micro)
            drawn += k
        collate_s = time.perf_counter() - t0

    counts = [[answer_tokens(mb) for mb in micro] for micro in steps_mb]
    timed = steps_mb
    samples = sum(int(mb["input_ids"].shape[0]) for micro in timed for mb in micro)
    tokens = sum(int(mb["attention_mask"].sum()) for micro in timed for mb in micro)
    padded = sum(mb["input_ids"].numel() for micro in timed for mb in micro)
    n_mb = sum(len(micro) for micro in timed)
    lrs = sc.lrs()
    init = {k: v.detach().clone() for k, v in model.state_dict().items()}
    init_sum = checksum(model)
    params = count_parameters(model)

    models = {"ours": model, "bare": copy.deepcopy(model)}
    sides = {"ours": Ours, "bare": Bare}
    wall = {"ours": [], "bare": []}  # per timed step, all rounds
    cpu = {"ours": [], "bare": []}
    firsts = {"ours": [], "bare": []}
    for r in range(args.warmup_rounds + args.rounds):
        runners = {}
        for side, m in models.items():
            m.load_state_dict(init)
            m.zero_grad(set_to_none=True)
            assert checksum(m) == init_sum, "runs must start from the same weights"
            runners[side] = sides[side](m, lrs, len(steps_mb), sc.warmup_ratio)
        for i, (micro, c) in enumerate(zip(steps_mb, counts, strict=True)):
            order = ("ours", "bare") if (i + r) % 2 == 0 else ("bare", "ours")
            for side in order:
                w0, c0 = time.perf_counter(), time.process_time()
                loss = runners[side].step(micro, c)
                w1, c1 = time.perf_counter(), time.process_time()
                if i == 0:
                    firsts[side].append(loss)
                if r >= args.warmup_rounds:
                    wall[side].append(w1 - w0)
                    cpu[side].append(c1 - c0)
    same_start = (
        all(abs(a - b) < 1e-4 for a, b in zip(firsts["ours"], firsts["bare"], strict=True))
        and len({round(x, 6) for x in firsts["ours"]}) == 1
    )
    per_step = sorted(b / a for a, b in zip(wall["ours"], wall["bare"], strict=True))
    k = len(timed)
    times = {
        side: [sum(ts[r * k : (r + 1) * k]) for r in range(args.rounds)]
        for side, ts in wall.items()
    }

    t_ours, t_bare = sum(wall["ours"]), sum(wall["bare"])
    cpu_ours, cpu_bare = sum(cpu["ours"]), sum(cpu["bare"])
    n = args.rounds
    res = {
        "preset": args.preset,
        "stage": args.stage,
        "data": kind,
        "parameters": sum(g["total"] for g in params.values()),
        "threads": torch.get_num_threads(),
        "steps_timed": len(timed),
        "samples_drawn": drawn,
        "skipped": dict(collator.skipped),
        "micro_batches_timed": n_mb,
        "samples_timed": samples,
        "tokens_timed": tokens,
        "padded_tokens_timed": padded,
        "collate_s": round(collate_s, 2),
        "rounds": n,
        "warmup_rounds": args.warmup_rounds,
        "ours_s": [round(t, 3) for t in times["ours"]],
        "bare_s": [round(t, 3) for t in times["bare"]],
        "ours_samples_per_s": round(samples * n / t_ours, 2),
        "bare_samples_per_s": round(samples * n / t_bare, 2),
        "ours_tokens_per_s": round(tokens * n / t_ours),
        "bare_tokens_per_s": round(tokens * n / t_bare),
        "ratio": round(t_bare / t_ours, 3),
        "median_step_ratio": round(per_step[len(per_step) // 2], 3),
        "cpu_s": {"ours": round(cpu_ours, 2), "bare": round(cpu_bare, 2)},
        "cpu_ratio": round(cpu_bare / cpu_ours, 3),
        "step_s": {side: [round(t, 4) for t in ts] for side, ts in wall.items()},
        "first_step_loss": {side: round(v[0], 6) for side, v in firsts.items()},
        "same_start": same_start,
    }
    print(
        f"{args.preset} ({res['parameters']:,} parameters), stage {args.stage}, {kind}: "
        f"{len(timed)} timed steps x {n} rounds, {n_mb} micro-batches, {samples} samples, "
        f"{tokens:,} tokens ({padded:,} padded) per run; collated once in {collate_s:.1f} s"
    )
    print(
        f"bare {res['bare_samples_per_s']} samples/s {res['bare_tokens_per_s']:,} tokens/s | "
        f"ours {res['ours_samples_per_s']} samples/s {res['ours_tokens_per_s']:,} tokens/s | "
        f"ours/bare {res['ratio']}x (target >= 0.9x; median step {res['median_step_ratio']}x, "
        f"CPU time {res['cpu_ratio']}x); same start: {same_start} "
        f"(first-step loss {res['first_step_loss']})"
    )
    print(json.dumps({"bench": "train", **res}))
    if not same_start:
        raise SystemExit("the two sides did not start from the same weights and batches")
    return res


if __name__ == "__main__":
    main()
