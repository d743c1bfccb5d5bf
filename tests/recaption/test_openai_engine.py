"""OpenAIEngine against a real server process: ``transformers serve`` on the tiny InternVL.

Retries, backoff, timeouts and the concurrency bound are driven by a fault-injecting proxy in
front of that server (a real server answers 503 or hangs only on cue from one). The kill test
``kill -9``s the server under a running job, restarts it and reruns: nothing lost or doubled.
The same engine against vLLM's server is in test_vllm_engines.py (``make test-vllm``).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from manifests.configs import ConfigError
from recaption.engines.base import EngineConfig, Request, SamplingConfig
from recaption.engines.hf import TransformersEngine
from recaption.engines.openai_engine import EngineUnavailable, OpenAIEngine, encode_image
from tests.recaption.fault_proxy import CANNED_CAPTION, FaultProxy
from tests.recaption.servers import (
    ServerProcess,
    Store,
    assert_same_greedy_text,
    free_port,
    run_job,
    start_server,
)
from vl3data.sample_media import jpeg_bytes

PROMPT = "Describe the image briefly."
GREEDY = SamplingConfig(max_new_tokens=12)


@pytest.fixture(scope="module")
def served(tiny_internvl, tmp_path_factory):
    server = start_server(tiny_internvl, tmp_path_factory.mktemp("serve"))
    yield server
    server.stop()


def config(model: Path, base_url: str, **kw) -> EngineConfig:
    defaults = {"concurrency": 2, "max_image_side": 1024, "timeout_s": 30.0}
    defaults.update(max_retries=3, backoff_s=0.05)
    return EngineConfig(kind="openai", model=str(model), base_url=base_url, **{**defaults, **kw})


@pytest.fixture(scope="module")
def requests_(photos) -> list[Request]:
    return [Request(name, jpeg_bytes(img), PROMPT) for name, img in photos.items()]


def test_answers_equal_the_transformers_engine(served, tiny_internvl, requests_):
    engine = OpenAIEngine(config(tiny_internvl, served.base_url))
    got = engine.generate(requests_, GREEDY)
    engine.close()
    hf = TransformersEngine(EngineConfig(model=str(tiny_internvl), max_image_side=1024))
    want = hf.generate(requests_, GREEDY)
    assert [r.key for r in got] == [r.key for r in requests_]
    assert all(r.error is None and r.output_tokens > 0 for r in got)
    # the image went over the wire unchanged (its size sets the tile count) and the chat template
    # matched: the same prompt tokens
    assert [r.prompt_tokens for r in got] == [r.prompt_tokens for r in want]
    assert_same_greedy_text(got, want)


def test_retries_with_backoff_then_answers(served, tiny_internvl, requests_):
    image = requests_[0].image
    plans = {
        "p503": ["503", "503", "ok"],
        "p429": ["429", "ok"],
        "p500": ["500", "ok"],
        "drop": ["drop", "ok"],  # connection closed without an answer
        "p400": ["400"],  # about the request: never retried
        "always503": ["503"],
    }
    reqs = [Request(k, image, k) for k in [*plans, "fine"]]
    delays: list[float] = []
    with FaultProxy(served.base_url, plans) as proxy:
        engine = OpenAIEngine(config(tiny_internvl, proxy.base_url), sleep=delays.append)
        results = engine.generate(reqs, GREEDY)
    by_key = {r.key: r for r in results}
    assert [r.key for r in results] == [r.key for r in reqs]
    assert all(by_key[k].error is None for k in ("p503", "p429", "p500", "drop", "fine"))
    assert by_key["p400"].error.startswith("http_400: ")
    assert by_key["always503"].error.startswith("http_503: ")
    assert by_key["always503"].text == ""
    assert proxy.hits == Counter(p503=3, p429=2, p500=2, drop=2, p400=1, always503=4, fine=1)
    assert engine.retries == 2 + 1 + 1 + 1 + 0 + 3
    # backoff 0.05 * 2**attempt, or the server's Retry-After (1 s, on 429 and 503) when longer:
    # p503 twice, p429 once, always503 three times; p500 and drop once each
    assert sorted(delays) == [0.05, 0.05] + [1.0] * 6


def test_timeouts_are_retried_then_reported(served, tiny_internvl, requests_):
    """Only the hanging requests may time out, however busy the machine: the others are
    answered by the proxy itself (no model run), and the hang lasts until the proxy closes, so
    a timeout is the only way a hanging request can end."""
    image = requests_[0].image
    plans = {"slow_once": ["hang", "canned"], "slow": ["hang"], "fine": ["canned"]}
    reqs = [Request(k, image, k) for k in ("slow_once", "slow", "fine")]
    with FaultProxy(served.base_url, plans, hang_s=600) as proxy:
        engine = OpenAIEngine(config(tiny_internvl, proxy.base_url, timeout_s=2, max_retries=1))
        results = engine.generate(reqs, GREEDY)
    assert [r.error for r in results] == [None, "timeout", None]
    assert [r.text for r in results] == [CANNED_CAPTION, "", CANNED_CAPTION]
    assert proxy.hits == Counter(slow_once=2, slow=2, fine=1)


def test_concurrency_never_exceeds_the_bound(served, tiny_internvl, requests_):
    reqs = [Request(f"{r.key}-{i}", r.image, PROMPT) for i in range(2) for r in requests_[:5]]
    # each request is held 1 s: ample for three to overlap however slow the machine
    with FaultProxy(served.base_url, delay_s=1.0) as proxy:
        engine = OpenAIEngine(config(tiny_internvl, proxy.base_url, concurrency=3))
        results = engine.generate(reqs, GREEDY)
    assert [r.key for r in results] == [r.key for r in reqs]
    assert all(r.error is None for r in results)
    assert proxy.max_in_flight == 3


def test_undecodable_image_is_an_error_and_never_sent(served, tiny_internvl, requests_):
    reqs = [Request("bad", b"\xff\xd8 not a jpeg", "bad"), requests_[0]]
    with FaultProxy(served.base_url) as proxy:
        results = OpenAIEngine(config(tiny_internvl, proxy.base_url)).generate(reqs, GREEDY)
    assert results[0].error.startswith("decode_error: ")
    assert results[1].error is None
    assert proxy.hits["bad"] == 0


def test_unchanged_images_go_as_they_are(requests_):
    mime, payload = encode_image(requests_[0].image, 4096)
    assert (mime, payload) == ("image/jpeg", requests_[0].image)
    mime, payload = encode_image(requests_[0].image, 64)
    assert mime == "image/jpeg" and len(payload) < len(requests_[0].image)


def test_a_batch_nobody_answers_raises_unavailable(served, tiny_internvl, requests_):
    image = requests_[0].image
    reqs = [Request("bad", b"junk", "bad")] + [Request(f"k{i}", image, "503") for i in range(3)]
    with FaultProxy(served.base_url, {"503": ["503"]}) as proxy:
        engine = OpenAIEngine(config(tiny_internvl, proxy.base_url, max_retries=1), sleep=no_wait)
        with pytest.raises(EngineUnavailable, match="3 of 4 requests got no answer"):
            engine.generate(reqs, GREEDY)


def test_setup_fails_fast_without_a_server(tiny_internvl):
    engine = OpenAIEngine(config(tiny_internvl, f"http://127.0.0.1:{free_port()}/v1"))
    with pytest.raises(EngineUnavailable, match="no OpenAI-compatible server answers"):
        engine.setup()


def test_setup_rejects_a_model_the_server_does_not_list(served, tiny_internvl):
    with FaultProxy(served.base_url) as proxy:
        proxy.models = ["someone/else"]
        with pytest.raises(ConfigError, match=r"engine\.model"):
            OpenAIEngine(config(tiny_internvl, proxy.base_url)).setup()


def no_wait(seconds: float) -> None:
    """Backoff without the wait."""


def kill_when_answered(
    server: ServerProcess, count: int, called_off: threading.Event
) -> threading.Thread:
    """``kill -9`` the server as soon as it has answered ``count`` more chat completions,
    unless ``called_off`` is set first."""
    count += server.answered()  # its log counts what it answered before (the module's tests)

    def watch() -> None:
        while server.answered() < count:
            if called_off.is_set():
                return
            time.sleep(0.01)
        server.kill()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_server_killed_mid_run_resumes_with_nothing_lost_or_doubled(
    served, tiny_internvl, requests_
):
    """The module's server is the one killed, then started again at its address (starting a
    server of its own would cost this test another ~10 s): it serves on for whatever runs
    after."""
    prompts = [PROMPT, "What is in this picture?"]
    reqs = [Request(f"{r.key}-{i}", r.image, p) for i, p in enumerate(prompts) for r in requests_]
    batches = [reqs[i : i + 4] for i in range(0, len(reqs), 4)]
    sampling = SamplingConfig(max_new_tokens=48)
    store = Store()
    cfg = config(tiny_internvl, served.base_url, max_retries=2, backoff_s=0.2)
    # batch 0 answered, then the server dies in the middle of batch 1
    called_off = threading.Event()
    watcher = kill_when_answered(served, len(batches[0]) + 1, called_off)
    try:
        with pytest.raises(EngineUnavailable):
            run_job(OpenAIEngine(cfg), batches, sampling, store)
        watcher.join(timeout=5)
        assert 1 <= len(store.done) < len(batches)
    finally:  # whatever happened, the server is up again for the rest of the module
        called_off.set()
        watcher.join(timeout=5)
        served.kill()  # (a no-op when the watcher did it) ...
        served.start(timeout_s=120)  # ... and the same server at the same address
    run_job(OpenAIEngine(cfg), batches, sampling, store)  # the rerun: a fresh engine
    assert store.writes == Counter(r.key for r in reqs)  # every key, each written once
    again = Store()
    run_job(OpenAIEngine(cfg), batches, sampling, again)
    assert store.results() == again.results()  # the same as an uninterrupted run
    assert all(r.error is None for r in store.results().values())
