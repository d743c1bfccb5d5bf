"""Hashes of each decoded image, for the pool-wide deduplication step (``curation.dedup``).

``content_hash``: BLAKE2b of the decoded pixels (size, RGB bytes) after the EXIF rotation, so a
PNG and a lossless re-encode of one picture, or two files differing only in their metadata, are
the same content. ``phash``: imagehash's DCT perceptual hash (64 bits, 16 hex digits), which
survives re-encoding, resizing and small crops; the step compares it by Hamming distance.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from PIL import ImageOps
from PIL.Image import DecompressionBombError

from curation.stages.decode import _open, _to_rgb
from manifests.marks import alive, errors_to, set_column


def image_hashes(data: bytes) -> tuple[str, str]:
    """(content hash, perceptual hash) of one encoded image, both hex strings."""
    try:
        import imagehash
    except ImportError as exc:  # a dependency of vl3data; named for a hand-made environment
        raise ImportError("perceptual dedup needs imagehash: pip install 'imagehash>=4.3'") from exc
    im = _to_rgb(ImageOps.exif_transpose(_open(data)))
    digest = hashlib.blake2b(f"{im.width}x{im.height}".encode(), digest_size=16)
    digest.update(im.tobytes())
    return digest.hexdigest(), str(imagehash.phash(im))


@dataclass
class ImageHashes:
    """CPU stage: ``content_hash`` and ``phash`` of every live row's image (null elsewhere).
    An image that cannot be decoded again is ``error``/``hash_error`` (never a crash)."""

    name: str = "hash"

    def __call__(self, batch: pa.Table) -> pa.Table:
        live = alive(batch)
        content: list[str | None] = [None] * batch.num_rows
        perceptual: list[str | None] = [None] * batch.num_rows
        reasons: list[str | None] = [None] * batch.num_rows
        images = batch["image"]
        for i in np.flatnonzero(live).tolist():
            data = images[i].as_py()
            if not data:
                continue
            try:
                content[i], perceptual[i] = image_hashes(data)
            except (OSError, ValueError, SyntaxError, DecompressionBombError):
                reasons[i] = "hash_error"
        batch = set_column(batch, "content_hash", pa.array(content, pa.string()))
        batch = set_column(batch, "phash", pa.array(perceptual, pa.string()))
        return errors_to(batch, reasons, stage=self.name)
