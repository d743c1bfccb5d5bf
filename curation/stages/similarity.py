"""CLIP text–image similarity between each image and its coarse caption (and, optionally, its
original alt-text). The image side is the ``clip_embedding`` column: never recomputed."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.stages.clip_embed import EMBEDDING, embedding_matrix
from curation.stages.clip_model import ClipHandle, load_clip
from manifests.marks import alive, set_column


@dataclass
class ClipTextSim:
    """Model stage: ``clip_sim`` = cosine(image embedding, text embedding of ``text_column``).

    With ``alt_text`` it also writes ``clip_sim_alt`` against the source's own ``text``."""

    backend: str = "open_clip"
    model: str = "ViT-L-14"
    pretrained: str | None = "openai"
    device: str = "auto"
    precision: str = "auto"
    text_column: str = "coarse_caption"
    alt_text: bool = False
    batch_size: int = 256
    concurrency: int = 1
    num_gpus: float = 0
    num_cpus: float = 1
    name: str = "clip_sim"
    clip: ClipHandle | None = field(default=None, init=False, repr=False)

    def setup(self) -> None:
        self.clip = load_clip(
            self.backend, self.model, self.pretrained, self.device, self.precision
        )

    def _sims(self, batch: pa.Table, column: str) -> pa.Array:
        ok = alive(batch) & pc.is_valid(batch[EMBEDDING]).to_numpy(zero_copy_only=False)
        texts = batch[column].to_pylist()
        rows = np.array([i for i in np.flatnonzero(ok) if texts[i]], dtype=np.int64)
        sims = np.full(batch.num_rows, np.nan, dtype=np.float32)
        if rows.size:
            img = embedding_matrix(batch, rows)
            txt = self.clip.encode_texts([texts[i] for i in rows])
            sims[rows] = (img * txt).sum(axis=1)
        return pa.array(sims, pa.float32(), from_pandas=True)

    def __call__(self, batch: pa.Table) -> pa.Table:
        if self.clip is None:
            self.setup()
        batch = set_column(batch, "clip_sim", self._sims(batch, self.text_column))
        if self.alt_text:
            batch = set_column(batch, "clip_sim_alt", self._sims(batch, "text"))
        return batch
