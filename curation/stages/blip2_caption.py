"""Coarse captions with BLIP-2 through transformers' ``Blip2ForConditionalGeneration``.

The paper captions the aesthetic survivors coarsely with BLIP-2 and drops those whose caption
and image disagree under CLIP. We use transformers' BLIP-2, the same model as LAVIS's:
salesforce-lavis 1.0.2 pins transformers<4.27 and cannot share an environment with open_clip 3.x.
Greedy decoding, batched, ``max_new_tokens`` configurable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
from PIL import Image

from curation.stages.clip_model import resolve_device
from curation.stages.decode import decode_resized
from manifests.marks import alive, mark, set_column

CAPTION = "coarse_caption"


@dataclass
class Blip2Caption:
    """Model stage: writes ``coarse_caption``; an empty caption drops the row
    (reason ``empty_caption``)."""

    model: str = "Salesforce/blip2-opt-2.7b"
    prompt: str | None = None  # e.g. "a photo of"; None: unconditional captioning
    max_new_tokens: int = 30
    device: str = "auto"
    precision: str = "auto"
    batch_size: int = 16
    concurrency: int = 1
    num_gpus: float = 0
    num_cpus: float = 1
    name: str = "blip2"
    calls: int = field(default=0, init=False)
    _net: Any = field(default=None, init=False, repr=False)
    _proc: Any = field(default=None, init=False, repr=False)

    def setup(self) -> None:
        import torch

        try:
            from transformers import AutoProcessor, Blip2ForConditionalGeneration
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("BLIP-2 captions need: pip install 'vl3data[models]'") from exc
        self._device = resolve_device(self.device)
        precision = self.precision
        if precision == "auto":
            precision = "fp16" if self._device.startswith("cuda") else "fp32"
        dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
        self._proc = AutoProcessor.from_pretrained(self.model)
        self._net = Blip2ForConditionalGeneration.from_pretrained(self.model, dtype=dtype)
        self._net = self._net.to(self._device).eval()
        self._dtype = dtype
        tok = self._proc.tokenizer
        # a caption never contains BOS, padding or image placeholders; EOS ends it
        self._suppress = sorted(set(tok.all_special_ids) - {tok.eos_token_id})
        size = self._proc.image_processor.size
        self._size = (size["width"], size["height"])

    def caption(self, images: list[Image.Image]) -> list[str]:
        import torch

        self.calls += 1
        kw = {"images": images, "return_tensors": "pt"}
        if self.prompt:
            kw["text"] = [self.prompt] * len(images)
        inputs = self._proc(**kw).to(self._device)
        inputs["pixel_values"] = inputs["pixel_values"].to(self._dtype)
        with torch.inference_mode():
            out = self._net.generate(
                **inputs,
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                num_beams=1,
                suppress_tokens=self._suppress or None,
            )
        if "input_ids" in inputs:  # decoder-only LMs echo the prompt
            out = out[:, inputs["input_ids"].shape[1] :]
        texts = self._proc.batch_decode(out, skip_special_tokens=True)
        return [t.strip() for t in texts]

    def __call__(self, batch: pa.Table) -> pa.Table:
        if self._net is None:
            self.setup()
        live = np.flatnonzero(alive(batch))
        captions: list[str | None] = [None] * batch.num_rows
        images = batch["image"]
        if live.size:
            # the processor resizes to its own square size anyway: decode straight to it
            pil = [decode_resized(images[int(i)].as_py(), self._size) for i in live]
            for i, text in zip(live, self.caption(pil), strict=True):
                captions[int(i)] = text
        batch = set_column(batch, CAPTION, pa.array(captions, pa.string()))
        reasons = [("empty_caption" if c is not None and not c else None) for c in captions]
        return mark(batch, reasons, self.name)
