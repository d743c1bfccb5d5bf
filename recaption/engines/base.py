"""The one interface every captioning engine implements.

An engine turns a batch of (image bytes, instruction) requests into generated texts with
token counts. It is Ray-agnostic: the recaption job wraps it in a Ray Data actor stage that
calls ``setup()`` once per actor. Engines: ``transformers`` (CPU or GPU, what tests and the demo
run), ``vllm`` (offline engine), ``openai`` (any OpenAI-compatible chat-completions server).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from manifests.configs import require

ENGINES = ("transformers", "vllm", "openai")


@dataclass
class SamplingConfig:
    """Generation settings shared by every engine. Greedy (temperature 0) by default."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        require(self.max_new_tokens >= 1, "sampling.max_new_tokens", "must be at least 1")
        require(self.temperature >= 0, "sampling.temperature", "must be 0 (greedy) or more")
        require(0 < self.top_p <= 1, "sampling.top_p", "must be in (0, 1]")


@dataclass
class EngineConfig:
    """Which engine runs which checkpoint, and how. Fields an engine does not use are ignored."""

    kind: str = "transformers"  # transformers | vllm | openai
    model: str = "OpenGVLab/InternVL2-8B"  # hub id or local directory (openai: served name)
    device: str = "auto"  # transformers: cuda when there is one
    precision: str = "auto"  # transformers: bf16 on GPU, fp32 on CPU
    batch_size: int = 8  # images per generate() call / per Ray batch
    concurrency: int = 1  # actors (transformers, vllm) or in-flight requests (openai)
    num_gpus: float = 0  # per actor
    max_image_side: int = 896  # images are resized so their longer side is at most this
    # vllm
    tensor_parallel_size: int = 1
    max_model_len: int = 8192
    gpu_memory_utilization: float = 0.9
    # openai
    base_url: str = "http://127.0.0.1:8000/v1"
    api_key: str = "EMPTY"
    timeout_s: float = 120.0
    max_retries: int = 5
    backoff_s: float = 1.0
    extra: dict = field(default_factory=dict)  # passed through to the engine's constructor

    def __post_init__(self) -> None:
        require(self.kind in ENGINES, "engine.kind", f"{self.kind!r} is not one of {ENGINES}")
        require(self.batch_size >= 1, "engine.batch_size", "must be at least 1")
        require(self.concurrency >= 1, "engine.concurrency", "must be at least 1")
        require(self.max_image_side >= 28, "engine.max_image_side", "must be at least 28")
        require(
            self.base_url.startswith(("http://", "https://")),
            "engine.base_url",
            f"{self.base_url!r} is not an http(s) URL",
            "e.g. http://127.0.0.1:8000/v1",
        )
        require(self.timeout_s > 0, "engine.timeout_s", "must be positive")
        require(self.max_retries >= 0, "engine.max_retries", "must be 0 or more")


@dataclass
class Request:
    """One image, or a video clip's frames, and the instruction to answer about it."""

    key: str
    image: bytes  # encoded (JPEG/PNG/WebP) bytes; unused (b"") for a clip
    prompt: str
    # a video clip instead: (seconds from the clip's start, encoded frame) in order; each frame
    # reaches the model after its "Time {t:.1f}s:" label, as VideoLLaMA3 renders video frames
    frames: list[tuple[float, bytes]] = field(default_factory=list)


def frame_label(t: float) -> str:
    """The text before a clip's frame: VideoLLaMA3's ``Time {t:.1f}s:`` (DESIGN §5)."""
    return f"Time {t:.1f}s:"


def user_content(req: Request, image_part: Callable[[int], dict[str, Any]]) -> list[dict]:
    """One user message's content in every engine's chat format: the image first, then the
    instruction (InternVL's own order); for a clip, each frame after its time label, then the
    instruction. ``image_part(j)`` is the engine's part for the request's ``j``-th image."""
    if not req.frames:
        return [image_part(0), {"type": "text", "text": req.prompt}]
    parts: list[dict] = []
    for j, (t, _) in enumerate(req.frames):
        parts += [{"type": "text", "text": frame_label(t)}, image_part(j)]
    return [*parts, {"type": "text", "text": req.prompt}]


@dataclass
class Result:
    """One generated text. ``finish_reason`` is ``stop`` or ``length`` (hit max_new_tokens);
    ``error`` is set (and ``text`` empty) when the engine could not answer this request."""

    key: str
    text: str
    prompt_tokens: int = 0
    output_tokens: int = 0
    finish_reason: str = "stop"
    error: str | None = None


class Engine(Protocol):
    """``setup()`` loads the model (never at import or construction); ``generate`` answers a
    batch in the order given, one Result per Request, never raising for a single bad input."""

    def setup(self) -> None: ...

    def generate(self, requests: list[Request], sampling: SamplingConfig) -> list[Result]: ...
