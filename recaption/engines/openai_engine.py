"""The ``openai`` engine: any OpenAI-compatible chat-completions server (``vllm serve``, SGLang,
LMDeploy, ``transformers serve``, ...), with each image sent inline as a base64 data URL.

Requests run on ``cfg.concurrency`` threads (the server batches what is in flight), each with a
``cfg.timeout_s`` deadline and up to ``cfg.max_retries`` retries with exponential backoff
(``cfg.backoff_s * 2**attempt``, or the server's ``Retry-After`` when longer) on connection
errors, timeouts, 408, 429 and 5xx. Other 4xx answers are about the request itself (a bad image,
a prompt too long) and are not retried.

The unavailability contract, which is what lets a killed server be restarted under a running job
with nothing lost or doubled:

- A request that still fails after its retries, while the server is otherwise answering, becomes
  an error :class:`Result` (``http_503: ...``, ``http_400: ...``, ``timeout``, ...) and the batch
  goes on: that input is recorded as an error, like an undecodable image.
- :meth:`OpenAIEngine.generate` raises :class:`EngineUnavailable` instead of returning when the
  server could not be reached at all for some request after all its retries (``connection_error``:
  a property of the server, never of the input), or when no request of the batch got an answer
  (every one ended in a retryable failure). The answers already received for that batch are
  dropped with it: the caller writes nothing for the batch and does not mark its partition done,
  so rerunning the job once the server is back redoes exactly that batch.
"""

from __future__ import annotations

import base64
import io
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from PIL import Image

from manifests.configs import require
from recaption.engines.base import EngineConfig, Request, Result, SamplingConfig, user_content
from recaption.engines.hf import DECODE_ERRORS, decode_image, describe_error, request_seed

INSTALL_HINT = "pip install openai"
RETRY_STATUS = frozenset({408, 429})  # and every 5xx
MAX_BACKOFF_S = 60.0
_MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}


class EngineUnavailable(ConnectionError):
    """The server is down (or answers nothing): this batch has no trustworthy result and must be
    redone later. Raised by ``generate`` instead of returning error Results (see module doc)."""


class _BadResponse(Exception):
    """A 200 answer with nothing usable in it."""


@dataclass
class _Failure:
    """Why one request got no answer. ``retryable`` failures say nothing about the input;
    ``unreachable`` ones mean no connection to the server could be made at all."""

    error: str
    retryable: bool
    unreachable: bool = False
    retry_after_s: float = 0.0


def encode_image(data: bytes, max_side: int) -> tuple[str, bytes]:
    """The bytes to send and their MIME type: the original bytes when decoding changes nothing
    (no resize, already RGB and upright), so the server sees exactly what the other engines see;
    otherwise the decoded, shrunk image as a JPEG (quality 95)."""
    with Image.open(io.BytesIO(data)) as probe:
        fmt, size, mode = probe.format, probe.size, probe.mode
        upright = probe.getexif().get(0x0112, 1) == 1  # EXIF orientation
    if fmt in _MIME and mode == "RGB" and upright and max(size) <= max_side:
        decode_image(data, max_side)  # a truncated file must fail here, not on the server
        return _MIME[fmt], data
    buf = io.BytesIO()
    decode_image(data, max_side).save(buf, "JPEG", quality=95)
    return "image/jpeg", buf.getvalue()


def data_url(mime: str, payload: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(payload).decode('ascii')}"


class OpenAIEngine:
    """Engine over an OpenAI-compatible server at ``cfg.base_url`` serving ``cfg.model``.

    ``cfg.extra`` goes to the ``openai.OpenAI`` client (e.g. ``default_headers``). ``sleep`` is the
    backoff's wait; tests pass a recorder."""

    def __init__(self, cfg: EngineConfig, sleep: Callable[[float], Any] | None = None):
        self.cfg = cfg
        self._client: Any = None
        self._pool: ThreadPoolExecutor | None = None
        self._sleep = sleep
        self._lock = threading.Lock()
        self.retries = 0  # retries made so far (all requests), for stats and tests

    def setup(self) -> None:
        try:
            import openai
        except ImportError as exc:
            raise ImportError(f"the openai engine needs the OpenAI client: {INSTALL_HINT}") from exc
        self._openai = openai
        self._client = openai.OpenAI(
            base_url=self.cfg.base_url,
            api_key=self.cfg.api_key,
            timeout=self.cfg.timeout_s,
            max_retries=0,  # retries are ours: counted, with our backoff and our contract
            **self.cfg.extra,
        )
        self._pool = ThreadPoolExecutor(self.cfg.concurrency, thread_name_prefix="openai-engine")
        self._check_model()

    def _check_model(self) -> None:
        """Fail before any work when the server is down or serves another model, rather than
        turning every request into the same error. Servers without ``/models``, or that list
        none, are trusted."""
        oa = self._openai
        for attempt in range(self.cfg.max_retries + 1):
            try:
                served = [m.id for m in self._client.models.list()]
                break
            except oa.NotFoundError:
                return
            except (oa.APIConnectionError, oa.InternalServerError) as exc:
                if attempt == self.cfg.max_retries:
                    raise EngineUnavailable(
                        f"no OpenAI-compatible server answers at {self.cfg.base_url} "
                        f"({type(exc).__name__}); start it, or fix engine.base_url"
                    ) from exc
                time.sleep(min(self.cfg.backoff_s * 2**attempt, MAX_BACKOFF_S))
        require(
            not served or self.cfg.model in served,  # transformers serve lists its cache only
            "engine.model",
            f"{self.cfg.base_url} does not serve {self.cfg.model!r}",
            f"one of {served}",
        )

    def close(self) -> None:
        """Stop the threads and close the HTTP connections."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        if self._client is not None:
            self._client.close()
        self._pool = self._client = None

    def generate(self, requests: list[Request], sampling: SamplingConfig) -> list[Result]:
        if self._client is None:
            self.setup()
        assert self._pool is not None
        down = threading.Event()  # set when the server is unreachable: stop asking
        futures = [self._pool.submit(self._one, r, sampling, down) for r in requests]
        outcomes = [f.result() for f in futures]
        failures = [o for o in outcomes if isinstance(o, _Failure)]
        answered = [o for o in outcomes if isinstance(o, Result) and o.error is None]
        if down.is_set() or (failures and all(f.retryable for f in failures) and not answered):
            first = next((f.error for f in failures if f.unreachable), failures[0].error)
            raise EngineUnavailable(
                f"{self.cfg.base_url} ({self.cfg.model}): {len(failures)} of {len(requests)} "
                f"requests got no answer after {self.cfg.max_retries} retries ({first}); "
                "nothing from this batch is kept, rerun once the server is back"
            )
        return [
            o if isinstance(o, Result) else Result(r.key, "", error=o.error)
            for r, o in zip(requests, outcomes, strict=True)
        ]

    def _one(
        self, req: Request, sampling: SamplingConfig, down: threading.Event
    ) -> Result | _Failure:
        """One request with its retries: a Result, or the last _Failure."""
        images = [data for _, data in req.frames] or [req.image]  # a clip: its frames
        try:
            urls = [data_url(*encode_image(d, self.cfg.max_image_side)) for d in images]
        except DECODE_ERRORS as exc:
            return Result(req.key, "", error=f"decode_error: {describe_error(exc)}")
        body = self._body(req, sampling, urls)
        attempt = 0
        while True:
            if down.is_set():
                return _Failure("connection_error", retryable=True, unreachable=True)
            try:
                return self._ask(req.key, body)
            except (self._openai.APIError, _BadResponse) as exc:
                failure = self._classify(exc)
            if not failure.retryable or attempt >= self.cfg.max_retries:
                if failure.unreachable:
                    down.set()
                return failure
            delay = min(max(self.cfg.backoff_s * 2**attempt, failure.retry_after_s), MAX_BACKOFF_S)
            attempt += 1
            with self._lock:
                self.retries += 1
            if self._sleep is not None:
                self._sleep(delay)
            elif down.wait(delay):  # wakes early when another request found the server down
                return _Failure("connection_error", retryable=True, unreachable=True)

    def _body(self, req: Request, sampling: SamplingConfig, urls: list[str]) -> dict[str, Any]:
        content = user_content(req, lambda j: {"type": "image_url", "image_url": {"url": urls[j]}})
        body: dict[str, Any] = {
            "model": self.cfg.model,
            "messages": [{"role": "user", "content": content}],
            "max_tokens": sampling.max_new_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            # per request, from (seed, key): the same as the vllm engine's, whatever the batching
            "seed": request_seed(sampling.seed, req.key) % 2**31,
        }
        if sampling.repetition_penalty != 1.0:  # not in OpenAI's API; vLLM and SGLang take it
            body["extra_body"] = {"repetition_penalty": sampling.repetition_penalty}
        return body

    def _ask(self, key: str, body: dict[str, Any]) -> Result:
        resp = self._client.chat.completions.create(**body)
        if not resp.choices:
            raise _BadResponse("no choices")
        choice = resp.choices[0]
        usage = resp.usage
        return Result(
            key,
            choice.message.content or "",
            prompt_tokens=usage.prompt_tokens if usage else 0,
            output_tokens=usage.completion_tokens if usage else 0,
            finish_reason="length" if choice.finish_reason == "length" else "stop",
        )

    def _classify(self, exc: Exception) -> _Failure:
        oa = self._openai
        if isinstance(exc, oa.APITimeoutError):  # before APIConnectionError: it subclasses it
            return _Failure("timeout", retryable=True)
        if isinstance(exc, oa.APIConnectionError):
            return _Failure("connection_error", retryable=True, unreachable=True)
        if isinstance(exc, oa.APIStatusError):
            status = exc.status_code
            message = " ".join(str(getattr(exc, "message", exc)).split())[:200]
            return _Failure(
                f"http_{status}: {message}",
                retryable=status in RETRY_STATUS or status >= 500,
                retry_after_s=_retry_after(exc.response.headers.get("retry-after")),
            )
        return _Failure(f"bad_response: {exc}", retryable=False)


def _retry_after(value: str | None) -> float:
    """Seconds from a ``Retry-After`` header given in seconds; 0 when absent or a date."""
    try:
        return max(0.0, float(value)) if value else 0.0
    except ValueError:
        return 0.0
