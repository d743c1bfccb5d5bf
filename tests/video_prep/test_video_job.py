"""The video job end to end: every input accounted for, shards readable by webdataset and by
Ray Data, each annotation format, and a killed run that resumes to the same result."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from manifests.configs import load_config
from manifests.dataset import read_dataset_json, shard_paths
from manifests.ledger import read_ledger
from tests.cli import start_until_done, video_cmd
from video_prep.config import VideoConfig
from video_prep.job import run_video_job

TASKS = ("caption", "streaming", "grounding")


def cfg_for(out: Path, videos, annotations, fmt="jsonl", *more: str) -> VideoConfig:
    sets = [
        f"output={out}",
        f"input.videos={videos}",
        f"input.annotations={annotations}",
        f"input.format={fmt}",
        "frames.max_side=160",
        *more,
    ]
    return load_config(VideoConfig, "configs/video_demo.yaml", sets)


@pytest.fixture(scope="module")
def demo_run(demo_videos, tmp_path_factory, ray_local):
    out = tmp_path_factory.mktemp("video_out")
    cfg = cfg_for(out, demo_videos["videos"], demo_videos["annotations"])
    docs = run_video_job(cfg, progress=False)
    return out, docs, demo_videos


def test_every_input_has_a_ledger_row_with_its_reason(demo_run):
    out, _, demo = demo_run
    lines = Path(demo["annotations"]).read_text().splitlines()
    for task in TASKS:
        ledger = read_ledger(out / task).to_pylist()
        assert len(ledger) == len(lines)  # one row per annotation entry, the bad line included
        by_key = {r["source_key"]: r for r in ledger}
        for name, reason in demo["broken"].items():
            assert by_key[name]["status"] == "error" and by_key[name]["reason"] == reason
        assert by_key["not_there.mp4"]["reason"] == "unknown_video"
        assert sum(r["reason"] == "bad_line" for r in ledger) == 1
        issues = json.loads(by_key["vtest.avi"]["issues"])
        assert [i["reason"] for i in issues] == ["end_before_start"]
        issues = json.loads(by_key["bikes.mp4"]["issues"])
        assert [i["reason"] for i in issues] == ["time_past_duration"]
        stats = json.loads((out / task / "stats.json").read_text())
        assert stats["inputs"] == len(lines) == stats["kept"] + stats["dropped"] + stats["error"]


def test_clips_of_the_six_minute_video(demo_run):
    out, _, _ = demo_run
    row = next(
        r for r in read_ledger(out / "caption").to_pylist() if r["source_key"] == "pattern_6min.mp4"
    )
    clips = json.loads(row["clips"])
    assert len(clips) == 3 and all(c["length"] <= 120 for c in clips)
    assert row["grid_frames"] == 360 and row["decode_passes"] == 1  # one decode for three clips


def test_samples_read_back_with_webdataset(demo_run):
    import webdataset as wds

    out, docs, _ = demo_run
    for task in TASKS:
        n = 0
        for sample in wds.WebDataset([str(p) for p in shard_paths(out / task)], shardshuffle=False):
            rec = json.loads(sample["json"])
            frames = [k for k in sample if k.startswith("f") and k.endswith(".jpg")]
            assert len(frames) == len(rec["frames"]) == len(rec["timestamps"]) >= 1
            with Image.open(io.BytesIO(sample[frames[0]])) as im:  # the size the mixer counts
                assert im.size == (rec["width"], rec["height"])
            assert rec["timestamps"] == sorted(rec["timestamps"])
            if task == "streaming":
                assert rec["stream"] and rec["conversation"][0]["role"] == "user"
                times = [m["time"] for m in rec["conversation"]]
                assert times == sorted(times) and rec["start_time"] <= times[0]
            else:
                assert rec["conversations"][0]["value"].startswith("<video>\n")
            if task == "grounding":
                answer = rec["conversations"][1]["value"]
                s, e = (float(x) for x in answer.removesuffix(" s").split("-"))
                assert 0 <= s < e <= rec["clip"]["end"] - rec["clip"]["start"] + 1e-6
            n += 1
        assert n == docs[task]["samples"] > 0


def test_shards_read_back_with_ray_data(demo_run):
    """Through manifests.readers.ray_dataset: every frame column present, bytes or None (plain
    read_webdataset fails on frame counts that vary: tests/manifests/test_readers.py)."""
    from manifests.readers import ray_dataset

    out, docs, _ = demo_run
    rows = ray_dataset(out / "caption").take_all()
    assert len(rows) == docs["caption"]["samples"]
    for r in rows:
        frames = json.loads(r["json"])["frames"]
        members = [f.split(".", 1)[1] for f in frames]
        assert all(isinstance(r[m], bytes) and r[m][:2] == b"\xff\xd8" for m in members)
        assert all(r[c] is None for c in r if c.startswith("f") and c not in members)


def test_report_shows_strips_and_clip_histograms(demo_run):
    out, _, _ = demo_run
    html = (out / "grounding" / "report.html").read_text()
    assert "captions per minute" not in html or "data:image/png;base64" in html
    assert html.count('class="sample"') >= 3 and "data:image/jpeg;base64" in html
    assert html.count('<div class="sheet frames">') >= 3  # frames as wide as their cards
    assert "corrupt_container" in html and "unknown_video" in html


def test_rerun_is_a_no_op_and_restart_is_identical(demo_run, tmp_path):
    out, docs, demo = demo_run
    cfg = cfg_for(out, demo["videos"], demo["annotations"])
    assert (
        run_video_job(cfg, progress=False)["caption"]["created_at"] == docs["caption"]["created_at"]
    )
    other = tmp_path / "again"
    run_video_job(cfg_for(other, demo["videos"], demo["annotations"]), progress=False)
    for task in TASKS:
        a = [(out / task / s["path"]).read_bytes() for s in read_dataset_json(out / task)["shards"]]
        b = [
            (other / task / s["path"]).read_bytes()
            for s in read_dataset_json(other / task)["shards"]
        ]
        assert a == b  # deterministic shards


def _link(videos: Path, real: Path, names: list[str]) -> None:
    videos.mkdir(parents=True, exist_ok=True)
    for n in names:
        shutil.copyfile(real, videos / n)


def test_activitynet_youcook2_and_charades_formats(tmp_path, videos, ray_local):
    bikes = videos / "bikes.mp4"
    v = tmp_path / "videos"
    _link(v, bikes, ["v_aaa.mp4", "bbb.mp4", "3MSZA.mp4"])
    (v / "training" / "113").mkdir(parents=True)
    shutil.copyfile(bikes, v / "training" / "113" / "GLd3aX16zBg.mp4")
    anet = tmp_path / "anet.json"
    anet.write_text(json.dumps({
        "v_aaa": {"duration": 10.0, "timestamps": [[0, 4], [4, 9.5]], "sentences": ["a", "b"]},
        "v_bbb": {"duration": 10.0, "timestamps": [[1, 3]], "sentences": ["c"]},
        "v_zzz": {"duration": 10.0, "timestamps": [[1, 3]], "sentences": ["unknown video"]},
    }))  # fmt: skip
    yc = tmp_path / "yc2.json"
    yc.write_text(json.dumps({"database": {"GLd3aX16zBg": {
        "duration": 10.0, "subset": "training", "recipe_type": "113",
        "annotations": [{"segment": [1, 4], "id": 0, "sentence": "spread the butter"},
                        {"segment": [5, 8], "id": 1, "sentence": "add cheese"}]}}}))  # fmt: skip
    sta = tmp_path / "sta.txt"
    sta.write_text("3MSZA 2.3 5.4##person turns a light on.\n3MSZA 6.0 9.0##person sits down.\n")
    expect = {"activitynet": (anet, 2, 3), "youcook2": (yc, 1, 2), "charades": (sta, 1, 2)}
    for fmt, (ann, kept, grounding) in expect.items():
        out = tmp_path / f"out_{fmt}"
        docs = run_video_job(cfg_for(out, v, ann, fmt), progress=False)
        ledger = read_ledger(out / "grounding").to_pylist()
        assert sum(r["status"] == "kept" for r in ledger) == kept, fmt
        assert docs["grounding"]["samples"] == grounding, fmt
    rows = {
        r["source_key"]: r
        for r in read_ledger(tmp_path / "out_activitynet" / "caption").to_pylist()
    }
    assert rows["v_zzz"]["reason"] == "unknown_video"


def test_bad_config_fails_before_any_work(tmp_path):
    from manifests.configs import ConfigError

    with pytest.raises(ConfigError, match=r"input\.videos"):
        cfg_for(tmp_path / "o", tmp_path / "nope", tmp_path / "a.jsonl").check_runnable()
    with pytest.raises(ConfigError, match=r"clips\.max_captions_per_min"):
        load_config(VideoConfig, "configs/video_demo.yaml", ["clips.max_captions_per_min=0.1"])
    with pytest.raises(ConfigError, match="tasks"):
        load_config(VideoConfig, "configs/video_demo.yaml", ["tasks=[captions]"])


@pytest.mark.slow  # a minute on 2 cores: `make test-slow` (CI runs it)
def test_kill_9_then_rerun_equals_uninterrupted(tmp_path, demo_videos, ray_local):
    sets = [
        f"input.videos={demo_videos['videos']}",
        f"input.annotations={demo_videos['annotations']}",
        "frames.max_side=160",
        "input.partition_size=1",
        "ray.num_cpus=2",
    ]
    out = tmp_path / "killed"
    cmd = video_cmd("configs/video_demo.yaml", sets=[*sets, f"output={out}"])
    proc = start_until_done(cmd, out / "_work" / "prepare" / "done", 3, start_new_session=True)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (out / "caption" / "dataset.json").exists()
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    ref = tmp_path / "reference"
    run_video_job(
        load_config(VideoConfig, "configs/video_demo.yaml", [*sets, f"output={ref}"]),
        progress=False,
    )
    for task in TASKS:
        a, b = read_dataset_json(out / task), read_dataset_json(ref / task)
        assert a["samples"] == b["samples"] and [s["bytes"] for s in a["shards"]] == [
            s["bytes"] for s in b["shards"]
        ]
        assert [(out / task / s["path"]).read_bytes() for s in a["shards"]] == [
            (ref / task / s["path"]).read_bytes() for s in b["shards"]
        ]
        keys = [r["id"] for r in read_ledger(out / task).to_pylist()]
        assert len(keys) == len(set(keys)) == len(read_ledger(ref / task))
