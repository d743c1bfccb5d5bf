"""Decode + aspect check + resize to 224x224: ours (header probe, JPEG draft) vs naive PIL.

Naive: ``Image.open(f).convert("RGB").resize((224, 224))``, what most scripts do. Ours: read the
header, check the aspect ratio, decode at the smallest DCT scale that covers 224 px, resize.
Both run in this one process (one core) over the same real JPEGs, interleaved in rounds so
machine noise hits both alike. Prints images/s per core and the ratio.

    .venv/bin/python bench/bench_decode.py [--rounds 5] [--scale 1 2 4]
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import time

import numpy as np
from PIL import Image

from curation.stages.decode import decode_resized
from vl3data.sample_media import jpeg_bytes, real_photos

SIZE = (224, 224)


def naive(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB").resize(SIZE)


def ours(data: bytes) -> Image.Image | None:
    with Image.open(io.BytesIO(data)) as im:  # header only
        w, h = im.size
    if not 1 / 3 <= w / h <= 3:
        return None
    return decode_resized(data, SIZE)


def corpus(scale: int) -> list[bytes]:
    """The real photos, upscaled ``scale``x (camera-sized inputs are larger than the samples)."""
    out = []
    for arr in real_photos().values():
        big = np.repeat(np.repeat(arr, scale, axis=0), scale, axis=1) if scale > 1 else arr
        out.append(jpeg_bytes(big, quality=90))
    return out


def timed(fn, images: list[bytes], repeat: int) -> float:
    t0 = time.perf_counter()
    for _ in range(repeat):
        for data in images:
            fn(data)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--scale", type=int, nargs="+", default=[1, 2, 4])
    args = ap.parse_args(argv)
    results = {}
    for scale in args.scale:
        images = corpus(scale)
        px = np.mean([np.prod(Image.open(io.BytesIO(d)).size) for d in images]) / 1e6
        repeat = max(1, int(40 / max(1, scale * scale)))
        t_naive = t_ours = 0.0
        for _ in range(args.rounds):
            t_naive += timed(naive, images, repeat)
            t_ours += timed(ours, images, repeat)
        n = len(images) * repeat * args.rounds
        row = {
            "images": n,
            "mean_megapixels": round(float(px), 2),
            "naive_img_per_s_per_core": round(n / t_naive, 1),
            "ours_img_per_s_per_core": round(n / t_ours, 1),
            "speedup": round(t_naive / t_ours, 2),
        }
        results[f"scale{scale}"] = row
        naive_rate, our_rate = row["naive_img_per_s_per_core"], row["ours_img_per_s_per_core"]
        print(
            f"{len(images)} real JPEGs x{scale} ({px:.2f} MP): naive {naive_rate} img/s, ", end=""
        )
        print(f"ours {our_rate} img/s per core -> {row['speedup']}x")
    print(
        json.dumps(
            {
                "bench": "decode",
                "machine": platform.processor() or platform.machine(),
                "results": results,
            }
        )
    )
    return results


if __name__ == "__main__":
    main()
