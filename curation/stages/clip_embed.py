"""CLIP image embeddings, computed once per image and reused by every later stage.

The aesthetic heads, the caption–image similarity and the k-means clustering all read the
``clip_embedding`` column this stage writes; none of them runs the image tower again.
Preprocessing is ours (JPEG draft decoding straight to the size the model needs), matching the
model's own transform: shortest side resized (bicubic) then centre-cropped, or squashed for
SigLIP-style processors, then normalised.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from PIL import Image, ImageOps

from curation.stages.clip_model import ClipStage, PreprocessSpec
from curation.stages.decode import _open, _orientation, _to_rgb
from manifests.marks import alive, errors_to, set_column
from manifests.schema import EMBEDDING


def preprocess(data: bytes, spec: PreprocessSpec, draft: bool = True) -> np.ndarray:
    """Encoded image bytes -> (3, H, W) float32, normalised as the model expects."""
    h, w = spec.size
    with _open(data) as im:
        orientation = _orientation(im)
        if draft and im.format == "JPEG":
            iw, ih = im.size
            if spec.resize_mode == "shortest":
                scale = max(h, w) / min(iw, ih)
                want = (int(iw * scale) + 1, int(ih * scale) + 1)
            else:
                want = (w, h)
            im.draft("RGB", want)
        im.load()
        if orientation != 1:
            im = ImageOps.exif_transpose(im)
        im = _to_rgb(im)
    if spec.resize_mode == "shortest":
        iw, ih = im.size
        short = max(h, w)  # both libraries truncate the long side: int(short * long / short_in)
        nw, nh = (short, int(short * ih / iw)) if iw <= ih else (int(short * iw / ih), short)
        im = im.resize((nw, nh), Image.Resampling.BICUBIC)
        if spec.crop_offset == "round":  # torchvision's CenterCrop
            left, top = round((nw - w) / 2), round((nh - h) / 2)
        else:  # transformers' image processors
            left, top = (nw - w) // 2, (nh - h) // 2
        im = im.crop((left, top, left + w, top + h))
    else:
        im = im.resize((w, h), Image.Resampling.BICUBIC)
    x = np.asarray(im, dtype=np.float32) / 255.0
    x = (x - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    return x.transpose(2, 0, 1)


@dataclass
class ClipEmbed(ClipStage):
    """Model stage: writes ``clip_embedding`` (unit float32 vector) for every live row."""

    draft: bool = True
    batch_size: int = 64
    threads: int | None = None  # torch intra-op threads (Ray pins actors to num_cpus threads)
    name: str = "clip"

    def setup(self) -> None:
        if self.threads:
            import torch

            torch.set_num_threads(self.threads)
        self.load_model()

    def __call__(self, batch: pa.Table) -> pa.Table:
        if self.clip is None:
            self.setup()  # outside Ray: lazy load on first use
        live = alive(batch)
        images = batch["image"]
        pixels, rows, errors = [], [], [None] * batch.num_rows
        for i in np.flatnonzero(live):
            try:
                pixels.append(preprocess(images[i].as_py(), self.clip.spec, self.draft))
                rows.append(i)
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
                errors[i] = "decode_error"
        vectors: list[list[float] | None] = [None] * batch.num_rows
        if rows:
            emb = self.clip.encode_images(np.stack(pixels))
            for j, i in enumerate(rows):
                vectors[i] = emb[j].tolist()
        batch = set_column(batch, EMBEDDING, pa.array(vectors, pa.list_(pa.float32())))
        return errors_to(batch, errors, self.name)


def embedding_matrix(batch: pa.Table, rows: np.ndarray | None = None) -> np.ndarray:
    """The embeddings of ``rows`` (default: every row, none of them null) as an (n, d) float32
    array, without a Python object per value."""
    if rows is not None:
        batch = batch.take(pa.array(rows, pa.int64()))
    col = batch[EMBEDDING].combine_chunks()
    flat = np.asarray(col.flatten().to_numpy(zero_copy_only=False), np.float32)
    return flat.reshape(len(col), -1)
