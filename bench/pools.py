"""Synthetic-size pools made of real photos, for the benchmarks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from vl3data.sample_media import jpeg_bytes, real_photos


def write_pool(root: Path, n: int, side: int = 320, seed: int = 0) -> Path:
    """``n`` JPEGs: random crops of the real sample photos, resized to ``side`` on the long edge,
    so files differ (no cache effects) and look like web images."""
    rng = np.random.default_rng(seed)
    photos = list(real_photos().values())
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        arr = photos[i % len(photos)]
        h, w = arr.shape[:2]
        ch, cw = rng.integers(h // 2, h + 1), rng.integers(w // 2, w + 1)
        y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        im = Image.fromarray(arr[y : y + ch, x : x + cw])
        im.thumbnail((side, side))
        sub = root / f"{i // 1000:04d}"
        sub.mkdir(exist_ok=True)
        (sub / f"{i:07d}.jpg").write_bytes(jpeg_bytes(np.asarray(im), quality=85))
    return root


def crops(n: int, size: tuple[int, int] = (640, 480), seed: int = 0) -> Iterator[bytes]:
    """``n`` JPEGs of exactly ``size`` (width, height): random crops of the real sample photos
    with that aspect ratio, resized to it, so every file differs and all decode alike."""
    rng = np.random.default_rng(seed)
    photos = list(real_photos().values())
    w, h = size
    for i in range(n):
        arr = photos[i % len(photos)]
        ph, pw = arr.shape[:2]
        scale = min(pw / w, ph / h)  # the largest crop of the target shape in this photo
        f = rng.uniform(0.5, 1.0) * scale
        cw, ch = max(1, round(w * f)), max(1, round(h * f))
        y, x = rng.integers(0, ph - ch + 1), rng.integers(0, pw - cw + 1)
        im = Image.fromarray(arr[y : y + ch, x : x + cw]).resize(size, Image.BICUBIC)
        yield jpeg_bytes(np.asarray(im), quality=85)
