"""Clip captions through recaption's engines: a clip's frames reach the model in order, each
after its ``Time t s:`` label; the same gates and retries as image captions; and the whole
raw-video job on the tiny InternVL (slow)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow as pa
import pytest
from PIL import Image

from manifests.configs import load_config
from recaption.engines.base import EngineConfig, Request, SamplingConfig, user_content
from recaption.engines.openai_engine import OpenAIEngine
from tests.recaption.fault_proxy import CANNED_CAPTION, FaultProxy
from video_prep.clip_captions import model_frames
from video_prep.raw_config import RawVideoConfig


def jpeg(colour: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 24), colour).save(buf, "JPEG")
    return buf.getvalue()


def test_a_clip_is_its_frames_after_their_time_labels_then_the_prompt():
    req = Request("k", b"", "Describe the clip.", [(0.0, b"a"), (1.5, b"b")])
    parts = user_content(req, lambda j: {"type": "image", "j": j})
    assert parts == [
        {"type": "text", "text": "Time 0.0s:"},
        {"type": "image", "j": 0},
        {"type": "text", "text": "Time 1.5s:"},
        {"type": "image", "j": 1},
        {"type": "text", "text": "Describe the clip."},
    ]
    single = user_content(Request("k", b"x", "Describe."), lambda j: {"type": "image"})
    assert single == [{"type": "image"}, {"type": "text", "text": "Describe."}]


def test_model_frames_are_uniform_and_timed_from_the_clip_start():
    frames = [bytes([i]) for i in range(10)]
    stamps = [float(t) for t in range(20, 30)]
    picked = model_frames(frames, stamps, 19.5, 4)
    assert picked == [(0.5, b"\x00"), (3.5, b"\x03"), (6.5, b"\x06"), (9.5, b"\t")]
    assert len(model_frames(frames, stamps, 19.5, 16)) == 10


def test_the_openai_engine_sends_a_clip_as_labelled_frames():
    """A real HTTP server on loopback answers only the request whose text parts are the labels
    in order and then the prompt; any other shape would reach the missing upstream and fail."""
    prompt = "Describe what happens in this video clip in one sentence."
    frames = [(0.0, jpeg("red")), (1.0, jpeg("green")), (2.0, jpeg("blue"))]
    wanted = f"Time 0.0s: Time 1.0s: Time 2.0s: {prompt}"
    with FaultProxy("http://127.0.0.1:9", plans={wanted: ["canned"]}) as proxy:
        proxy.models = ["tiny"]
        engine = OpenAIEngine(
            EngineConfig(kind="openai", model="tiny", base_url=proxy.base_url, max_retries=0)
        )
        engine.setup()
        try:
            (res,) = engine.generate([Request("v/c0", b"", prompt, frames)], SamplingConfig())
        finally:
            engine.close()
    assert (res.text, res.error) == (CANNED_CAPTION, None)
    assert proxy.hits[wanted] == 1


@pytest.fixture(scope="module")
def tiny_internvl(tmp_path_factory) -> Path:
    from vl3data.tiny_models import write_tiny_internvl

    return write_tiny_internvl(tmp_path_factory.mktemp("models") / "internvl")


def raw_config(model: Path, *sets: str) -> RawVideoConfig:
    return load_config(
        RawVideoConfig,
        "configs/video_raw_demo.yaml",
        [f"captions.short.engine.model={model}", *sets],
    )


@pytest.mark.slow
def test_clip_caption_stage_gates_and_retries_on_the_tiny_model(tiny_internvl):
    from video_prep.clip_captions import ClipCaptionStage

    cfg = raw_config(
        tiny_internvl,
        "captions.short.gates.min_chars=100000",  # nothing passes: every clip is retried once
        "captions.short.accept=[]",
        "captions.detailed.enabled=true",
        f"captions.detailed.engine.model={tiny_internvl}",
        "captions.detailed.engine.max_image_side=112",
        "captions.detailed.accept=[garbled,too_short,wrong_language,repetition,truncated]",
        "captions.detailed.sampling.max_new_tokens=8",
    )
    stage = ClipCaptionStage(cfg.captions)
    stage.setup()
    frames = [jpeg(c) for c in ("red", "green", "blue", "white")]
    batch = pa.table(
        {
            "id": ["v", "v", "w"],
            "clip_index": [0, 1, 0],
            "status": ["kept", "kept", "error"],
            "stage": [None, None, "probe"],
            "reason": [None, None, "no_video_stream"],
            "frames": [frames, frames[:2], []],
            "timestamps": [[0.0, 1.0, 2.0, 3.0], [4.0, 5.0], []],
            "clip_start": [0.0, 4.0, None],
        }
    )
    out = stage(batch).to_pylist()
    for r in out[:2]:
        assert r["status"] == "dropped" and r["stage"] == "clip_captions"
        assert r["reason"] == f"caption_{r['short_reason']}"  # garbled, too_short, ...
        assert r["short_attempts"] == 2  # the config's one retry
        assert r["short_prompt_tokens"] > 0 and r["short_caption"] is None
        assert r["detailed_caption"] and r["detailed_reason"] is None
    # more frames, a longer prompt: the frames were all sent
    assert out[0]["short_prompt_tokens"] > out[1]["short_prompt_tokens"]
    assert out[2]["status"] == "error" and out[2]["short_attempts"] is None


@pytest.mark.slow
def test_in_task_captions_load_the_model_once_per_process_and_retry_a_failed_load(
    tiny_internvl, tmp_path
):
    from engine.partitions import Partition
    from video_prep.raw_captions import (
        InTaskClipCaptions,
        StartCaptionModel,
        WaitCaptionModel,
        engines_of,
    )
    from video_prep.raw_job import CutScenes, load_raw_partition
    from video_prep.sample_videos import cuts_video

    videos = tmp_path / "videos"
    videos.mkdir()
    cuts_video(videos / "shots.mp4", [3.0, 2.48, 4.0])
    cfg = raw_config(tiny_internvl, f"input.videos={videos}", "frames.max_side=64")
    stages = [
        StartCaptionModel(cfg.captions),
        CutScenes(cfg),
        WaitCaptionModel(cfg.captions),
        InTaskClipCaptions(cfg.captions, group=2),  # 3 clips: two engine calls
    ]
    part = Partition(0, "videos", {"files": ["shots.mp4"]})
    rows = load_raw_partition(part, str(videos), "video-raw:test")
    for stage in stages:
        rows = stage(rows)
    out = rows.to_pylist()
    assert [r["clip_index"] for r in out] == [0, 1, 2]
    assert all(r["short_attempts"] and r["short_prompt_tokens"] > 0 for r in out)
    first = engines_of(cfg.captions)
    assert first.result()["short"] is engines_of(cfg.captions).result()["short"]  # kept
    # a model that cannot load fails the stage that waits for it; the next call tries again
    bad = raw_config(tmp_path / "no_model", f"input.videos={videos}")
    StartCaptionModel(bad.captions)(rows)
    with pytest.raises(OSError):
        WaitCaptionModel(bad.captions)(rows)
    assert engines_of(bad.captions) is not engines_of(cfg.captions)
    again = engines_of(bad.captions)
    with pytest.raises(OSError):
        again.result()
    assert engines_of(bad.captions) is not again  # not cached: a later task tries again


@pytest.mark.slow
@pytest.mark.parametrize(
    "run_in,passes", [("auto", {"videos"}), ("pool", {"scenes", "captions", "write"})]
)
def test_the_raw_video_job_end_to_end_on_the_tiny_model(
    tiny_internvl, tmp_path, ray_local, run_in, passes
):
    from manifests.dataset import shard_paths
    from manifests.ledger import read_ledger
    from manifests.readers import hf_dataset, ray_dataset
    from manifests.shards import iter_samples
    from video_prep.raw_job import run_raw_video_job
    from video_prep.sample_videos import broken_videos, cuts_video, pattern_video

    videos = tmp_path / "videos"
    expected = broken_videos(videos)
    cuts = cuts_video(videos / "shots.mp4", [3.0, 2.48, 4.0])
    pattern_video(videos / "long.mp4", 12)
    out = tmp_path / "out"
    cfg = raw_config(
        tiny_internvl,
        f"input.videos={videos}",
        f"output={out}",
        "clips.max_len_s=5",
        "frames.max_side=64",
        "captions.short.accept=[garbled,too_short,wrong_language,repetition,truncated]",
        f"captions.run_in={run_in}",
        "keep_work=true",
    )
    docs = run_raw_video_job(cfg, progress=False)
    # the CPU engine captions in the decoding tasks (one pass); a pool takes three
    assert {p.name for p in (out / "_work").iterdir() if p.is_dir()} >= passes
    assert not {"videos", "scenes", "captions", "write"} - passes & {
        p.name for p in (out / "_work").iterdir()
    }
    assert set(docs) == {"caption", "streaming", "grounding"}
    ledger = read_ledger(out / "caption").to_pylist()
    assert len(ledger) == len(expected) + 2  # every file a row
    rows = {r["source_key"]: r for r in ledger}
    for name, reason in expected.items():
        assert (rows[name]["status"], rows[name]["reason"]) == ("error", reason)
    assert json.loads(rows["shots.mp4"]["cuts"]) == cuts
    shots = json.loads(rows["shots.mp4"]["clips"])
    assert [c["start"] for c in shots] == [0.0, *cuts]
    assert [(c["start"], c["end"]) for c in json.loads(rows["long.mp4"]["clips"])] == [
        (0.0, 4.0),
        (4.0, 8.0),
        (8.0, 12.0),
    ]
    for task in docs:
        samples = list(iter_samples(shard_paths(out / task)))
        assert samples and len(samples) == docs[task]["samples"]
        assert ray_dataset(out / task).count() == len(samples)
        assert len(hf_dataset(out / task)) == len(samples)
        assert (out / task / "report.html").is_file()
    html = (out / "caption" / "report.html").read_text()
    assert "Scene cuts and clips" in html and "cut at 3.00 s" in html
    stats = json.loads((out / "caption" / "stats.json").read_text())
    assert stats["inputs"] == len(expected) + 2 and stats["error"] == len(expected)
    assert stats["scenes"]["cuts"] == len(cuts) and stats["scenes"]["clips"] == 6
    assert stats["scenes"]["grid_frames"] == 9 + 12
    # a rerun finds the output complete and returns the same documents
    assert run_raw_video_job(cfg, progress=False) == docs


@pytest.mark.slow
def test_kill_9_after_a_partition_then_rerun_equals_uninterrupted(
    tiny_internvl, tmp_path, ray_local
):
    import os
    import signal
    import subprocess

    from manifests.dataset import read_dataset_json
    from manifests.ledger import read_ledger
    from tests.cli import curate_cmd, start_until_done
    from video_prep.raw_job import run_raw_video_job
    from video_prep.sample_videos import broken_videos, cuts_video, pattern_video

    videos = tmp_path / "videos"
    broken_videos(videos)
    cuts_video(videos / "shots.mp4", [3.0, 2.48, 4.0])
    pattern_video(videos / "long.mp4", 12)
    sets = [
        f"input.videos={videos}",
        f"captions.short.engine.model={tiny_internvl}",
        "input.partition_size=1",
        "clips.max_len_s=5",
        "frames.max_side=64",
        "ray.num_cpus=2",
    ]
    out = tmp_path / "killed"
    cmd = curate_cmd("configs/video_raw_demo.yaml", sets=[*sets, f"output={out}"])
    cmd[3] = "video-raw"
    done = out / "_work" / "videos" / "done"  # the one pass: CPU captions in the tasks
    proc = start_until_done(cmd, done, 1, 240, start_new_session=True)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (out / "caption" / "dataset.json").exists()
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    # its workers (local processes: no Ray) load the model without drawing transformers' bar
    assert "starting 2 local worker processes" in rerun.stderr
    assert "Loading weights" not in rerun.stderr
    ref = tmp_path / "reference"
    run_raw_video_job(
        raw_config(tiny_internvl, *sets[1:], f"input.videos={videos}", f"output={ref}"),
        progress=False,
    )
    for task in ("caption", "streaming", "grounding"):
        a, b = read_dataset_json(out / task), read_dataset_json(ref / task)
        assert a["samples"] == b["samples"] > 0
        assert [(out / task / s["path"]).read_bytes() for s in a["shards"]] == [
            (ref / task / s["path"]).read_bytes() for s in b["shards"]
        ]
        keys = [r["id"] for r in read_ledger(out / task).to_pylist()]
        assert len(keys) == len(set(keys)) == len(read_ledger(ref / task)) == 5


@pytest.mark.slow
def test_captions_from_a_server_run_in_the_tasks_on_local_processes(tiny_internvl, tmp_path):
    """An OpenAI-compatible server (``transformers serve`` holding the tiny model) captions the
    clips; the job sends its requests from the partition tasks (one pass, `auto`), so it needs
    no Ray (``ray.executor: processes`` is accepted: the suite may have Ray up in this process,
    where `auto` would use it) and no worker loads a model. Each clip is one request the server
    answered (no retries here), and each becomes a caption sample."""
    from manifests.dataset import shard_paths
    from manifests.ledger import read_ledger
    from manifests.shards import iter_samples
    from tests.recaption.servers import start_server
    from video_prep.raw_job import RawVideoJob, run_raw_video_job
    from video_prep.sample_videos import cuts_video

    videos = tmp_path / "videos"
    videos.mkdir()
    cuts_video(videos / "shots.mp4", [3.0, 2.48, 4.0])
    sets = [
        f"input.videos={videos}",
        "clips.max_len_s=5",
        "frames.max_side=64",
        "captions.short.accept=[garbled,too_short,wrong_language,repetition,truncated]",
        "captions.short.retry=[]",
        "ray.num_cpus=2",
        "ray.executor=processes",  # refused for a job that needs Ray (a model stage)
    ]
    server = start_server(tiny_internvl, tmp_path)
    try:
        served = [
            "captions.short.engine.kind=openai",
            f"captions.short.engine.base_url={server.base_url}",
        ]
        out = tmp_path / "served"
        cfg = raw_config(tiny_internvl, *sets, *served, f"output={out}")
        assert not RawVideoJob().needs_ray(cfg)
        docs = run_raw_video_job(cfg, progress=False)
        answered = server.answered()
    finally:
        server.stop()
    stats = json.loads((out / "caption" / "stats.json").read_text())
    assert list(stats["passes_s"]) == ["videos"]  # one pass: captions in the decoding tasks
    assert list(stats["passes_s"]["videos"]["phases"]) == ["processes"]
    (row,) = read_ledger(out / "caption").to_pylist()
    clips = json.loads(row["clips"])
    assert len(clips) == 3 and answered == len(clips)  # the three shots
    samples = list(iter_samples(shard_paths(out / "caption")))
    assert len(samples) == docs["caption"]["samples"] == len(clips)
    texts = [json.loads(s["json"])["conversations"][-1]["value"] for s in samples]
    assert all(t.strip() for t in texts)
    assert all((out / task / "report.html").is_file() for task in docs)


# -- local workers that each hold the model: as many as fit in memory ----------------------------


def test_a_checkpoints_parameters_come_from_its_safetensors_headers(tiny_internvl, tmp_path):
    from transformers import AutoModelForImageTextToText

    from recaption.engines.weights import checkpoint_parameters, loaded_bytes

    model = AutoModelForImageTextToText.from_pretrained(tiny_internvl)
    assert checkpoint_parameters(tiny_internvl) == sum(p.numel() for p in model.parameters())
    assert loaded_bytes(tiny_internvl, "fp32") == 2 * loaded_bytes(tiny_internvl, "bf16")
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04 never unpickled")
    assert checkpoint_parameters(pickled) is None  # unknown, not opened


def test_a_worker_needs_each_in_task_model_once_and_a_servers_nothing(tiny_internvl):
    from recaption.engines.weights import loaded_bytes
    from recaption.in_task import WORKER_RUNTIME_BYTES
    from video_prep.raw_job import RawVideoJob

    job = RawVideoJob()
    one = loaded_bytes(tiny_internvl, "auto")
    both = raw_config(tiny_internvl, "captions.detailed.enabled=true")
    both.captions.detailed.engine.model = str(tiny_internvl)
    need = job.worker_memory(raw_config(tiny_internvl))
    assert (need.bytes, need.field) == (WORKER_RUNTIME_BYTES + one, "captions.short.engine.model")
    assert job.worker_memory(both).bytes == WORKER_RUNTIME_BYTES + one  # the same model, once
    served = raw_config(
        tiny_internvl,
        "captions.short.engine.kind=openai",
        "captions.short.engine.base_url=http://127.0.0.1:9/v1",
    )
    assert job.worker_memory(served) is None


def test_workers_that_do_not_fit_are_not_started_and_none_fitting_is_refused_first(
    tiny_internvl, tmp_path, caplog
):
    from engine.job import local_workers
    from manifests.configs import ConfigError
    from video_prep.raw_job import RawVideoJob, run_raw_video_job

    job = RawVideoJob()
    gib = job.worker_memory(raw_config(tiny_internvl)).bytes / 2**30
    fits = {
        n: raw_config(tiny_internvl, "ray.num_cpus=4", f"ray.memory_gb={n * gib + 0.01}")
        for n in (1, 3, 9)
    }
    assert local_workers(job, fits[9]) == 4  # every CPU's worker fits
    with caplog.at_level("WARNING", logger="engine.job"):
        assert local_workers(job, fits[3]) == 3
        assert local_workers(job, fits[1]) == 1
    assert "starting 1 worker processes, not 4" in caplog.text
    out = tmp_path / "out"
    (out / "caption").mkdir(parents=True)
    (out / "caption" / "dataset.json").write_text("{}")  # an earlier run's output
    (tmp_path / "videos").mkdir()
    small = raw_config(
        tiny_internvl,
        f"output={out}",
        f"input.videos={tmp_path / 'videos'}",
        f"ray.memory_gb={gib / 2}",
        "ray.executor=processes",  # this test process may run Ray (whose check is per task)
    )
    with pytest.raises(ConfigError, match=r"captions\.short\.engine\.model") as err:
        run_raw_video_job(small, restart=True, progress=False)
    assert "needs ~" in str(err.value) and "engine.kind: openai" in str(err.value)
    assert (out / "caption" / "dataset.json").read_text() == "{}"  # --restart cleared nothing


@pytest.mark.slow
def test_a_run_starts_only_the_workers_that_fit(tiny_internvl, tmp_path):
    from manifests.dataset import shard_paths
    from video_prep.raw_job import RawVideoJob, run_raw_video_job
    from video_prep.sample_videos import cuts_video

    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(2):
        cuts_video(videos / f"shots{i}.mp4", [3.0, 2.5])
    need = RawVideoJob().worker_memory(raw_config(tiny_internvl)).bytes
    out = tmp_path / "out"
    cfg = raw_config(
        tiny_internvl,
        f"input.videos={videos}",
        f"output={out}",
        "input.partition_size=1",
        "frames.max_side=64",
        "captions.short.accept=[garbled,too_short,wrong_language,repetition,truncated]",
        "ray.num_cpus=2",
        "ray.executor=processes",
        f"ray.memory_gb={1.5 * need / 2**30}",  # room for one copy of the model, not two
    )
    docs = run_raw_video_job(cfg, progress=False)
    stats = json.loads((out / "caption" / "stats.json").read_text())
    assert stats["workers"] == 1 and stats["partitions"] == 2
    assert docs["caption"]["samples"] > 0 and shard_paths(out / "caption")
