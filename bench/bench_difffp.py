"""Visual tokens per video with and without DiffFP, on the real sample videos.

Each video is sampled as ``video_prep`` samples it (1 fps, at most 180 frames uniformly, JPEG
frames) and encoded by :class:`model.collate.Collator` as a caption record with the paper's
per-sample budget (10240 visual tokens, 2x2 merge; frames resized down to fit). Columns:

- ``tokens``: video tokens the LLM sees without DiffFP (= the vision encoder's merged tokens);
- ``DiffFP 0.1``: kept with our threshold (mean |Δ| of normalised pixels > 0.1, the paper's
  DiffFP; see :mod:`model.diffp`), and the share kept;
- ``hf 0.1``: kept with transformers' built-in threshold (``VideoLlama3VideoProcessor`` with
  ``use_token_compression=True``: 0.1 on a x255 scale);
- ``seq``: the sample's total tokens without / with DiffFP; ``ms``: mean encode time with
  DiffFP (JPEG decode, resize, patchify, mask), over ``--rounds``.

The tokenizer is the repo's tiny one (token counts of the video do not depend on it); the image
and video processors' own caps are set generous so the budget is what binds.

    .venv/bin/python bench/bench_difffp.py [--budget 10240] [--max-side N] [--rounds 3]
        [--videos bikes,vtest]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from manifests.chat import CHAT_TEMPLATE
from model.collate import CollateConfig, Collator
from model.diffp import HF_BUILTIN_THRESHOLD, HF_SCALE
from video_prep.frames import sample_video
from video_prep.probe import probe_video
from video_prep.sample_videos import real_videos

CONVERSATION = [
    {"from": "human", "value": "<video>\nDescribe the video."},
    {"from": "gpt", "value": "A short video."},
]


def build_processor(budget: int):
    from transformers import (
        AutoProcessor,
        VideoLlama3ImageProcessor,
        VideoLlama3Processor,
        VideoLlama3VideoProcessor,
    )

    from vl3data.tiny_models import write_tiny_videollama3_processor

    with tempfile.TemporaryDirectory() as tmp:
        tok = AutoProcessor.from_pretrained(write_tiny_videollama3_processor(Path(tmp))).tokenizer
    tok.model_max_length = 10**6  # the tiny tokenizer says 8192; nothing here is truncated
    return VideoLlama3Processor(
        image_processor=VideoLlama3ImageProcessor(
            size={"shortest_edge": 28 * 28, "longest_edge": 28 * 28 * 1280}
        ),
        video_processor=VideoLlama3VideoProcessor(
            size={"shortest_edge": 28 * 28, "longest_edge": 28 * 28 * budget}
        ),
        tokenizer=tok,
        chat_template=CHAT_TEMPLATE,
    )


def video_sample(key: str, frames: list[bytes], timestamps: list[float]) -> dict:
    names = [f"{key}.f{i:04d}.jpg" for i in range(len(frames))]
    rec = {"video": [key], "frames": names, "timestamps": timestamps, "conversations": CONVERSATION}
    sample = {"__key__": key, "json": json.dumps(rec).encode()}
    for name, data in zip(names, frames, strict=True):
        sample[name.split(".", 1)[1]] = data
    return sample


def measure(processor, sample: dict, budget: int, rounds: int) -> dict:
    def collator(**kw) -> Collator:
        return Collator(processor, CollateConfig(max_vision_tokens=budget, **kw))

    off = collator().encode(sample)
    on_c = collator(use_token_compression=True)
    t0 = time.perf_counter()
    for _ in range(rounds):
        on = on_c.encode(sample)
    ms = (time.perf_counter() - t0) / rounds * 1000
    hf = collator(
        use_token_compression=True, diff_threshold=HF_BUILTIN_THRESHOLD / HF_SCALE
    ).encode(sample)
    t, h, w = off["video_grid_thw"][0].tolist()
    return {
        "frames": t,
        "frame_px": f"{w * 14}x{h * 14}",
        "tokens": off["meta"]["video_tokens"],
        "diffp": on["meta"]["video_tokens"],
        "hf": hf["meta"]["video_tokens"],
        "seq_off": off["meta"]["length"],
        "seq_on": on["meta"]["length"],
        "ms": ms,
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=int, default=10240, help="visual tokens per sample")
    ap.add_argument("--max-side", type=int, default=None, help="frame decode size (native)")
    ap.add_argument("--max-frames", type=int, default=180)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--videos", help="comma-separated names of the real videos (default: all)")
    args = ap.parse_args(argv)

    processor = build_processor(args.budget)
    videos = real_videos()
    if args.videos:
        videos = {k: v for k, v in videos.items() if k in args.videos.split(",")}
    rows = []
    for name, path in sorted(videos.items()):
        info = probe_video(path)
        s = sample_video(path, info, max_frames=args.max_frames, max_side=args.max_side)
        sample = video_sample(name, s.frames, s.timestamps)
        row = {"video": name, "seconds": info.duration, "decoded": f"{s.size[0]}x{s.size[1]}"}
        row.update(measure(processor, sample, args.budget, args.rounds))
        row["kept_share"] = round(row["diffp"] / row["tokens"], 4)
        rows.append(row)

    print(
        "| video | s | frames | decoded → resized | tokens | DiffFP 0.1 (kept) | hf 0.1 |", end=""
    )
    print(" seq off → on | ms |")
    print("|---|---:|---:|---|---:|---:|---:|---|---:|")
    for r in rows:
        share = r["diffp"] / r["tokens"]
        print(
            f"| {r['video']} | {r['seconds']:.1f} | {r['frames']} | "
            f"{r['decoded']} → {r['frame_px']} | {r['tokens']:,} | "
            f"{r['diffp']:,} ({share:.0%}) | {r['hf']:,} | "
            f"{r['seq_off']:,} → {r['seq_on']:,} | {r['ms']:.0f} |"
        )
    res = {"bench": "difffp", "budget": args.budget, "max_side": args.max_side, "rows": rows}
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
