"""VideoLLaMA3's own annotations imported: image lists, a video as a one-element list and a
streaming record, with frames sampled exactly as the video job samples them (1 fps, its
sampler), so an imported video set has frame parity with ours."""

from __future__ import annotations

import json

from ingest.config import ImportConfig
from ingest.job import run_import
from manifests.chat import record_to_messages
from manifests.configs import load_config
from manifests.dataset import shard_paths
from manifests.ledger import read_ledger
from manifests.shards import iter_samples
from tests.ingest.inputs import VL3_EXPECTED, videollama3_inputs
from video_prep.frames import sample_video
from video_prep.probe import probe_video


def test_videollama3_annotations_with_frame_parity(ray_local, photos, tmp_path):
    ann, data = videollama3_inputs(tmp_path, photos)
    out = tmp_path / "out"
    sets = [f"input.annotations={ann}", f"input.media={data}", f"output={out}"]
    sets += ["input.partition_size=4", "frames.max_side=64"]
    cfg = load_config(ImportConfig, "configs/import_videollama3.yaml", sets)
    docs = run_import(cfg, progress=False)
    assert {m: d["samples"] for m, d in docs.items()} == {"image": 1, "video": 2, "text": 1}
    for row in read_ledger(out / "video").to_pylist():
        kind, status, reason = VL3_EXPECTED[int(row["source_key"].rsplit(":", 1)[1])]
        if status == "kept" and kind != "video":
            status, reason = "dropped", f"in_{kind}_set"
        assert (row["status"], row["reason"]) == (status, reason), row["source_key"]

    samples = [s for s in iter_samples(shard_paths(out / "video"))]
    video, stream = sorted(samples, key=lambda s: b"stream" in s["json"])
    rec = json.loads(video["json"])
    path = data / "videos" / "clock.mp4"
    ours = sample_video(path, probe_video(path), fps=1.0, max_frames=180, max_side=64)
    assert rec["timestamps"] == [round(t, 3) for t in ours.timestamps]
    assert [video[n.split(".", 1)[1]] for n in rec["frames"]] == ours.frames  # same bytes
    assert rec["video"] == [video["__key__"]] and rec["source_video"] == "videos/clock.mp4"
    assert rec["conversations"][0]["value"].startswith("<video>")

    srec = json.loads(stream["json"])
    assert srec["stream"] and (srec["start_time"], srec["end_time"]) == (1.0, 3.0)
    assert srec["timestamps"] == [1.0, 2.0, 3.0]  # seconds of the video, inside the span
    messages, vis = record_to_messages(srec)  # as the trainer renders it
    assert [m["role"] for m in messages] == ["stream", "user", "stream", "assistant"]
    assert vis.members == srec["frames"][:2]
