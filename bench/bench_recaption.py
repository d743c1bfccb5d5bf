"""Our transformers caption engine vs a bare ``generate()`` loop (target >= 0.9x).

Same images (the real sample photos, cycled), same model (the tiny random InternVL of
``vl3data.tiny_models``: the real ``InternVLForConditionalGeneration`` and processor), same batch
size, same greedy settings and token budget, same torch threads, both in this process. The bare
loop does what a user's script would: PIL decode and thumbnail, chat template, processor,
``model.generate``, decode, in input order. Ours is ``TransformersEngine.generate`` (image
decoding with draft mode, batches ordered by size, special tokens suppressed, token accounting).

Both use the same generation settings (greedy, the token budget, EOS, special tokens other than
EOS suppressed) on the same pixels, so they write the same number of tokens (printed); the figure
is images per second.

    .venv/bin/python bench/bench_recaption.py [--images 256] [--batch-size 8] [--max-new-tokens 64]
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from pathlib import Path


def _photos(n: int, side: int) -> list[bytes]:
    """The real photos, already at the model's input size and lossless: neither side resizes or
    decodes differently, so both see the same pixels in the same batches."""
    from PIL import Image

    from vl3data.sample_media import real_photos

    photos = []
    for arr in real_photos().values():
        im = Image.fromarray(arr).convert("RGB").resize((side, side * 3 // 4))
        buf = io.BytesIO()
        im.save(buf, "PNG")
        photos.append(buf.getvalue())
    return [photos[i % len(photos)] for i in range(n)]


def bare_loop(model_dir: Path, images: list[bytes], batch: int, max_new: int, side: int) -> dict:
    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    proc = AutoProcessor.from_pretrained(model_dir)
    proc.tokenizer.padding_side = "left"
    model = AutoModelForImageTextToText.from_pretrained(model_dir).eval()
    turn = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPT}]}]
    text = proc.apply_chat_template(turn, add_generation_prompt=True, tokenize=False)
    # the same generation settings as the engine: captions end only at EOS
    tok = proc.tokenizer
    suppress = sorted(
        i for i, t in tok.added_tokens_decoder.items() if t.special and i != tok.eos_token_id
    )
    out_tokens = 0
    t0 = time.perf_counter()
    for i in range(0, len(images), batch):
        pics = []
        for data in images[i : i + batch]:
            im = Image.open(io.BytesIO(data)).convert("RGB")
            im.thumbnail((side, side))
            pics.append(im)
        inputs = proc(images=pics, text=[text] * len(pics), padding=True, return_tensors="pt")
        with torch.inference_mode():
            out = model.generate(
                **inputs,
                max_new_tokens=max_new,
                do_sample=False,
                pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id,
                suppress_tokens=suppress,
            )
        gen = out[:, inputs["input_ids"].shape[1] :]
        for row in proc.tokenizer.batch_decode(gen, skip_special_tokens=True):
            assert isinstance(row, str)
        eos = proc.tokenizer.eos_token_id
        for row in gen.tolist():
            out_tokens += next((k + 1 for k, t in enumerate(row) if t == eos), len(row))
    return {"s": time.perf_counter() - t0, "output_tokens": out_tokens}


def ours(model_dir: Path, images: list[bytes], batch: int, max_new: int, side: int) -> dict:
    from recaption.engines.base import EngineConfig, Request, SamplingConfig
    from recaption.engines.hf import TransformersEngine

    engine = TransformersEngine(
        EngineConfig(model=str(model_dir), batch_size=batch, max_image_side=side)
    )
    engine.setup()
    reqs = [Request(f"k{i}", data, PROMPT) for i, data in enumerate(images)]
    t0 = time.perf_counter()
    results = engine.generate(reqs, SamplingConfig(max_new_tokens=max_new))
    spent = time.perf_counter() - t0
    assert len(results) == len(images) and not any(r.error for r in results)
    return {"s": spent, "output_tokens": sum(r.output_tokens for r in results)}


PROMPT = "Describe this image in one sentence."


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--max-side", type=int, default=112)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    import torch

    from vl3data.tiny_models import write_tiny_internvl

    torch.set_num_threads(args.threads)
    images = _photos(args.images, args.max_side)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = write_tiny_internvl(Path(tmp) / "internvl")
        run = (args.batch_size, args.max_new_tokens, args.max_side)
        ours(model_dir, images[: args.batch_size], *run)  # warm-up: first-call costs
        bare_loop(model_dir, images[: args.batch_size], *run)
        b = bare_loop(model_dir, images, *run)
        o = ours(model_dir, images, *run)
    res = {
        "images": args.images,
        "batch_size": args.batch_size,
        "max_new_tokens": args.max_new_tokens,
        "bare": {
            **b,
            "tokens_per_s": b["output_tokens"] / b["s"],
            "images_per_s": args.images / b["s"],
        },
        "ours": {
            **o,
            "tokens_per_s": o["output_tokens"] / o["s"],
            "images_per_s": args.images / o["s"],
        },
    }
    res["same_output_tokens"] = b["output_tokens"] == o["output_tokens"]
    res["ratio_tokens_per_s"] = res["ours"]["tokens_per_s"] / res["bare"]["tokens_per_s"]
    res["ratio_images_per_s"] = res["ours"]["images_per_s"] / res["bare"]["images_per_s"]
    print(f"{'':8} {'seconds':>8} {'out tokens':>11} {'tokens/s':>9} {'images/s':>9}")
    for name in ("bare", "ours"):
        r = res[name]
        print(
            f"{name:8} {r['s']:8.2f} {r['output_tokens']:11d} {r['tokens_per_s']:9.1f} "
            f"{r['images_per_s']:9.2f}"
        )
    print(
        f"ours / bare: {res['ratio_images_per_s']:.3f}x images/s (target >= 0.9x); "
        f"{res['ratio_tokens_per_s']:.3f}x output tokens/s"
    )
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
