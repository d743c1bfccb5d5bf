"""The ``transformers`` engine: any ``AutoModelForImageTextToText`` checkpoint, CPU or GPU.

It is what the tests and the CPU demo run (on the tiny InternVL from ``vl3data.tiny_models``),
and a fallback on a GPU box without vLLM. It needs a transformers-native checkpoint (e.g.
``OpenGVLab/InternVL3-1B-hf``): InternVL2's remote-code repositories (``OpenGVLab/InternVL2-8B``)
load in the vllm engine, not here.

Requests are decoded and shrunk first (a bad image becomes an error Result, the rest go on),
sorted by pixel count so each ``generate`` call pads to similar lengths, and answered in chunks of
``batch_size``. Sampling draws each request's tokens from its own generator seeded by
(seed, key), so a caption does not depend on which batch or position its request landed in.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import re
import warnings
from typing import Any

from PIL import Image, ImageOps

from manifests.configs import require
from recaption.engines.base import EngineConfig, Request, Result, SamplingConfig, user_content

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'vl3data[models]'  (or: pip install transformers torch torchvision)"
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def decode_image(data: bytes, max_side: int) -> Image.Image:
    """RGB, upright (EXIF), longer side at most ``max_side``; JPEGs decode straight at a reduced
    DCT scale. Raises one of ``DECODE_ERRORS`` for bytes no decoder can read."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        im = Image.open(io.BytesIO(data))
        scale = max_side / max(im.size)
        if scale < 1 and im.format == "JPEG":
            im.draft("RGB", (math.ceil(im.width * scale), math.ceil(im.height * scale)))
        im.load()
    im = ImageOps.exif_transpose(im)
    if im.mode != "RGB":
        im = _flatten(im)
    if max(im.size) > max_side:
        scale = max_side / max(im.size)
        size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
        im = im.resize(size, Image.Resampling.BICUBIC)
    return im


def describe_error(exc: Exception) -> str:
    """The exception without the buffer's memory address PIL puts in its messages, so the
    same bad bytes give the same error text on every run."""
    msg = re.sub(r"\s*<[^<>]* at 0x[0-9a-fA-F]+>", "", str(exc))
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def _flatten(im: Image.Image) -> Image.Image:
    """Transparent pixels become white, not the black ``convert('RGB')`` would give."""
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return im.convert("RGB")


def decode_request(req: Request, max_side: int) -> Image.Image | list[Image.Image]:
    """The request's image, or a clip's frames in order."""
    if req.frames:
        return [decode_image(data, max_side) for _, data in req.frames]
    return decode_image(req.image, max_side)


def images_of(decoded: Image.Image | list[Image.Image]) -> list[Image.Image]:
    return decoded if isinstance(decoded, list) else [decoded]


def decode_requests(
    requests: list[Request], max_side: int
) -> tuple[dict[int, Image.Image | list[Image.Image]], list[Result | None]]:
    """Each request's image (a clip's frames: a list), decoded (by position), and an error
    Result for those that could not be: the slots of the results list the engine still has to
    fill are None."""
    results: list[Result | None] = [None] * len(requests)
    images: dict[int, Image.Image | list[Image.Image]] = {}
    for i, req in enumerate(requests):
        try:
            images[i] = decode_request(req, max_side)
        except DECODE_ERRORS as exc:
            results[i] = Result(req.key, "", error=f"decode_error: {describe_error(exc)}")
    return images, results


def trim_generated(ids: list[int], eos_ids: set[int]) -> tuple[list[int], str]:
    """The tokens a request really generated: up to and including the first EOS (``stop``), or
    all of them when there is none (``length``: it ran into max_new_tokens). Padding that
    ``generate`` appends to rows that finished early lies after their EOS and is dropped."""
    for i, tok in enumerate(ids):
        if tok in eos_ids:
            return ids[: i + 1], "stop"
    return ids, "length"


def request_seed(seed: int, key: str) -> int:
    """A per-request seed that every worker and every rerun agree on."""
    digest = hashlib.blake2b(f"{seed}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & (2**63 - 1)


class TransformersEngine:
    """Engine on transformers' ``AutoProcessor`` + ``AutoModelForImageTextToText``.

    ``cfg.extra`` goes to ``from_pretrained`` of the model (e.g. ``attn_implementation``)."""

    def __init__(self, cfg: EngineConfig):
        require(cfg.precision in PRECISIONS, "engine.precision", f"must be one of {PRECISIONS}")
        self.cfg = cfg
        self._model: Any = None
        self._processor: Any = None

    def setup(self) -> None:
        try:
            import torch
            from transformers import AutoModelForImageTextToText, AutoProcessor
        except ImportError as exc:
            raise ImportError(f"the transformers engine needs: {INSTALL_HINT}") from exc
        device = self.cfg.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        precision = self.cfg.precision
        if precision == "auto":
            precision = "bf16" if device.startswith("cuda") else "fp32"
        dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
        if not log.isEnabledFor(logging.DEBUG):
            # transformers draws a "Loading weights" bar in every process that loads a model:
            # on local worker processes (engine.local_pool) each of them lands in the user's
            # terminal between our log lines; the job's own progress says what runs
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        processor = AutoProcessor.from_pretrained(self.cfg.model)
        require(
            getattr(processor, "chat_template", None) is not None,
            "engine.model",
            f"{self.cfg.model} ships no chat template",
            "use a checkpoint whose processor has one (chat_template.jinja)",
        )
        model = AutoModelForImageTextToText.from_pretrained(
            self.cfg.model, dtype=dtype, **self.cfg.extra
        )
        self._model = model.to(device).eval()
        self._processor = processor
        self._device = device
        self._dtype = dtype
        tok = processor.tokenizer
        tok.padding_side = "left"  # decoder-only: prompts end where generation starts
        eos = model.generation_config.eos_token_id
        eos = eos if isinstance(eos, list) else [eos]
        self._eos = {i for i in [*eos, tok.eos_token_id] if i is not None}
        # a caption never contains image placeholders, chat markers or padding: only EOS ends it
        specials = {i for i, t in tok.added_tokens_decoder.items() if t.special}
        self._suppress = sorted(specials - self._eos)
        self._pad = tok.pad_token_id if tok.pad_token_id is not None else min(self._eos)

    def generate(self, requests: list[Request], sampling: SamplingConfig) -> list[Result]:
        if self._model is None:
            self.setup()
        images, results = decode_requests(requests, self.cfg.max_image_side)
        order = sorted(images, key=lambda i: sum(m.width * m.height for m in images_of(images[i])))
        size = self.cfg.batch_size
        for start in range(0, len(order), size):
            chunk = order[start : start + size]
            batch = [requests[i] for i in chunk]
            answers = self._generate(batch, [images[i] for i in chunk], sampling)
            for i, res in zip(chunk, answers, strict=True):
                results[i] = res
        return results  # type: ignore[return-value]  # every slot is filled above

    def _generate(
        self,
        requests: list[Request],
        images: list[Image.Image | list[Image.Image]],
        sampling: SamplingConfig,
    ) -> list[Result]:
        import torch

        proc = self._processor
        texts = [
            proc.apply_chat_template(_user_turn(r), add_generation_prompt=True, tokenize=False)
            for r in requests
        ]
        flat = [im for decoded in images for im in images_of(decoded)]  # in placeholder order
        inputs = proc(images=flat, text=texts, padding=True, return_tensors="pt")
        inputs = inputs.to(self._device)
        inputs["pixel_values"] = inputs["pixel_values"].to(self._dtype)
        kw: dict[str, Any] = {
            "max_new_tokens": sampling.max_new_tokens,
            "repetition_penalty": sampling.repetition_penalty,
            "do_sample": False,  # sampling, when asked for, is done by _RowSampler
            "temperature": None,
            "top_p": None,
            "top_k": None,
            "pad_token_id": self._pad,
            "eos_token_id": sorted(self._eos),
            "suppress_tokens": self._suppress or None,
        }
        if sampling.temperature > 0:
            kw["logits_processor"] = [self._sampler(requests, sampling)]
        with torch.inference_mode():
            out = self._model.generate(**inputs, **kw)
        prompt_len = inputs["input_ids"].shape[1]
        prompt_tokens = inputs["attention_mask"].sum(dim=1).tolist()
        results = []
        rows = out[:, prompt_len:].tolist()
        for req, row, n_prompt in zip(requests, rows, prompt_tokens, strict=True):
            ids, finish = trim_generated(row, self._eos)
            text = proc.tokenizer.decode(ids, skip_special_tokens=True)
            results.append(Result(req.key, text, int(n_prompt), len(ids), finish))
        return results

    def _sampler(self, requests: list[Request], sampling: SamplingConfig) -> Any:
        import torch

        gens = []
        for r in requests:
            gen = torch.Generator(device=self._device)
            gen.manual_seed(request_seed(sampling.seed, r.key))
            gens.append(gen)
        return _row_sampler(gens, sampling.temperature, sampling.top_p)


def _user_turn(req: Request) -> list[dict]:
    """One user message: the image (or a clip's labelled frames), then the instruction."""
    return [{"role": "user", "content": user_content(req, lambda _j: {"type": "image"})}]


def _row_sampler(gens: list, temperature: float, top_p: float) -> Any:
    """A logits processor that samples each row with its own generator (temperature, nucleus)
    and leaves only the drawn token finite, so ``generate``'s greedy step picks it: transformers'
    own sampling draws every row from the one global RNG."""
    import torch
    from transformers import LogitsProcessor

    class _RowSampler(LogitsProcessor):
        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            probs = torch.softmax(scores.float() / temperature, dim=-1)
            if top_p < 1:
                sorted_p, idx = probs.sort(dim=-1, descending=True)
                # keep the smallest prefix whose mass reaches top_p (the top token always stays)
                drop = sorted_p.cumsum(dim=-1) - sorted_p >= top_p
                probs = probs.scatter(-1, idx, sorted_p.masked_fill(drop, 0.0))
            picked = torch.cat(
                [torch.multinomial(p, 1, generator=g) for p, g in zip(probs, gens, strict=True)]
            )
            out = torch.full_like(scores, -math.inf)
            return out.scatter(-1, picked[:, None], 0.0)

    return _RowSampler()
