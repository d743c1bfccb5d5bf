"""CLIP text–image similarity between each image and its coarse caption (and, optionally, its
original alt-text). The image side is the ``clip_embedding`` column: never recomputed."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.stages.clip_embed import embedding_matrix
from curation.stages.clip_model import ClipStage
from manifests.marks import alive, set_column
from manifests.schema import EMBEDDING


@dataclass
class ClipTextSim(ClipStage):
    """Model stage: ``clip_sim`` = cosine(image embedding, text embedding of ``text_column``).

    With ``alt_text`` it also writes ``clip_sim_alt`` against the source's own ``text``."""

    text_column: str = "coarse_caption"
    alt_text: bool = False
    batch_size: int = 256
    name: str = "clip_sim"

    def setup(self) -> None:
        self.load_model()

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
