"""Hostile inputs of the video job (issue 19): each costs one ledger row with a reason, never a
crash and never a silent drop; the annotation lines in equal the ledger rows out.

- a JSONL or Charades line that is not UTF-8 is one ``bad_line`` row, not the whole file;
- a line whose segments are bad is still one row (the video's), the problems in its issues;
- a truncated video (a faststart MP4 cut in half: its header still declares the full length)
  is used up to where its frames stop, and captions past that point are out of range.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from manifests.configs import load_config
from manifests.ledger import read_ledger
from manifests.schema import KEPT
from video_prep.annotations import Segment, VideoAnnotation, load_annotations
from video_prep.config import VideoConfig
from video_prep.grounding_eval import parse_interval
from video_prep.job import plan_inputs, run_video_job
from video_prep.prepare import prepare_video
from video_prep.probe import probe_video
from video_prep.sample_videos import real_videos


def cfg_for(out: Path, videos, annotations, fmt: str = "jsonl") -> VideoConfig:
    sets = [
        f"output={out}",
        f"input.videos={videos}",
        f"input.annotations={annotations}",
        f"input.format={fmt}",
        "frames.max_side=160",
    ]
    return load_config(VideoConfig, "configs/video_demo.yaml", sets)


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


def faststart_video(out: Path, seconds: float = 10.0) -> Path:
    """A test pattern with its header (moov) first, as web videos are written."""
    _ffmpeg(
        "-f", "lavfi", "-i", f"testsrc=duration={seconds}:size=160x120:rate=10",
        "-pix_fmt", "yuv420p", "-c:v", "libx264", "-preset", "ultrafast",
        "-movflags", "+faststart", str(out),
    )  # fmt: skip
    return out


def truncated_copy(src: Path, out: Path, fraction: float = 0.5) -> Path:
    data = src.read_bytes()
    out.write_bytes(data[: int(len(data) * fraction)])
    return out


def grid_count(path: Path) -> int:
    """Frames the ffmpeg CLI decodes at 1 fps (an independent count)."""
    info = probe_video(path)
    cmd = ["ffmpeg", "-nostdin", "-v", "quiet", "-i", str(path), "-vf", "fps=fps=1:round=down"]
    raw = subprocess.run([*cmd, "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], capture_output=True)
    return len(raw.stdout) // (info.width * info.height * 3)


@pytest.fixture(scope="module")
def clips_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("hostile_videos")
    full = faststart_video(d / "full.mp4")
    truncated_copy(full, d / "half.mp4")
    return d


# --- annotation lines ---------------------------------------------------------------------------


def _line(video: str, *segments: tuple[float, float, str]) -> bytes:
    segs = [{"start": s, "end": e, "text": t} for s, e, t in segments]
    return json.dumps({"video": video, "segments": segs}).encode() + b"\n"


def test_a_non_utf8_jsonl_line_costs_that_line_only(tmp_path):
    path = tmp_path / "ann.jsonl"
    path.write_bytes(
        b"\xef\xbb\xbf"  # a BOM before the first line is not an error
        + _line("a.mp4", (0, 1, "first"))
        + b'{"video": "b.mp4", "segments": [{"start": 0, "end": 1, "text": "caf\xe9"}]}\n'
        + b"{not json\r\n"
        + b"\n"
        + _line("c.mp4", (0, 1, "third"))
        # a raw U+2028 is valid inside a JSON string: not a line break
        + '{"video": "d.mp4", "segments": [{"start": 0, "end": 1, "text": "a\u2028b"}]}'.encode()
    )
    videos, issues = load_annotations(path, "jsonl")
    assert [v.video_id for v in videos] == ["a.mp4", "c.mp4", "d.mp4"]
    assert videos[2].segments == [Segment(0.0, 1.0, "a\u2028b")]
    assert [(i.video_id, i.segment_index, i.reason) for i in issues] == [
        ("", None, "bad_line"),
        ("", None, "bad_line"),
    ]
    assert issues[0].detail.startswith("line 2: not UTF-8")
    assert issues[1].detail.startswith("line 3: not JSON")


def test_a_non_utf8_charades_line_costs_that_line_only(tmp_path):
    path = tmp_path / "sta.txt"
    path.write_bytes(b"AAA 0.0 2.0##one\nBBB 0.0 2.0##caf\xe9\nAAA 2.0 4.0##two\n")
    videos, issues = load_annotations(path, "charades")
    assert videos == [
        VideoAnnotation("AAA", None, None, [Segment(0.0, 2.0, "one"), Segment(2.0, 4.0, "two")])
    ]
    assert [(i.reason, i.detail.split(":")[0]) for i in issues] == [("bad_line", "line 2")]


def test_each_jsonl_line_is_exactly_one_planned_row(tmp_path, clips_dir):
    """inputs in == ledger rows out: bad segments and a bad duration stay on their video's row."""
    path = tmp_path / "ann.jsonl"
    bad_segments = {
        "video": "full.mp4",
        "duration": "ten",
        "segments": [
            "not a segment",
            {"start": "x", "end": 2, "text": "bad start"},
            {"start": 0, "end": 2, "text": 7},
            {"start": 0, "end": 4, "text": "good"},
            {"start": 5, "end": 3, "text": "ends before it starts"},
        ],
    }
    path.write_bytes(
        json.dumps(bad_segments).encode()
        + b"\n"
        + b'{"video": "full.mp4", "segments": [{"start": 0, "end": 1, "text": "\xff"}]}\n'
        + b"[1, 2]\n"
        + _line("half.mp4", (0, 2, "kept"))
    )
    items = plan_inputs(cfg_for(tmp_path / "out", clips_dir, path))
    assert len(items) == 4
    by_key = {it["video_id"]: it for it in items}
    first = by_key["full.mp4"]
    assert (first["status"], first["reason"]) == (KEPT, None)
    assert first["segments"] == [[0.0, 4.0, "good"]]
    assert [(i["segment"], i["reason"]) for i in first["issues"]] == [
        (None, "bad_format"),
        (0, "bad_format"),
        (1, "bad_format"),
        (2, "bad_format"),
        (4, "end_before_start"),
    ]
    assert by_key["ann.jsonl:2"]["reason"] == by_key["ann.jsonl:3"]["reason"] == "bad_line"
    assert by_key["half.mp4"]["status"] == KEPT


# --- truncated videos ---------------------------------------------------------------------------


def test_a_truncated_faststart_mp4_is_used_up_to_its_last_frame(tmp_path, clips_dir):
    half = clips_dir / "half.mp4"
    info = probe_video(half)
    decodable = grid_count(half)  # seconds of the 1-fps grid that really decode
    assert info.duration == pytest.approx(10.0) and 1 <= decodable <= 7  # the header lies
    ann = VideoAnnotation(
        "half.mp4",
        "half.mp4",
        None,
        [
            Segment(0.0, 1.0, "the start"),
            Segment(0.5, 9.0, "runs past the last frame"),
            Segment(8.0, 9.5, "after the last frame"),
        ],
    )
    cfg = cfg_for(tmp_path / "out", clips_dir, tmp_path / "unused.jsonl")
    out = prepare_video(ann, str(half), cfg)
    assert out.status == KEPT, out
    issues = json.loads(out.info["issues"])
    reasons = [(i["segment"], i["reason"]) for i in issues]
    assert (None, "truncated") in reasons
    assert (1, "end_clamped") in reasons and (2, "time_past_duration") in reasons
    assert out.info["segments"] == 2
    truncated = next(i for i in issues if i["reason"] == "truncated")
    assert "10.0" in truncated["detail"]  # names the declared duration
    clips = json.loads(out.info["clips"])
    assert [c["end"] for c in clips] == [pytest.approx(float(decodable))]
    answers = []
    for s in out.samples:
        rec = json.loads(s["record"])
        assert all(t < decodable for t in rec["timestamps"])
        if s["task"] == "grounding":
            answers.append(parse_interval(rec["conversations"][1]["value"]))
    assert answers and all(end <= decodable for _, end in answers)
    assert out.info["duration"] == info.duration  # the ledger keeps what the probe declared
    assert out.info["decode_passes"] >= 2  # decoded again against the usable duration


def test_a_truncated_long_video_loses_the_clips_past_its_last_frame(tmp_path):
    full = faststart_video(tmp_path / "long.mp4", 300)
    half = truncated_copy(full, tmp_path / "long_half.mp4")
    decodable = grid_count(half)
    assert 120 < decodable < 240
    segs = [Segment(float(s), float(s + 25), f"the clock passes {s} s") for s in range(0, 290, 30)]
    ann = VideoAnnotation("long", "long_half.mp4", None, segs)
    out = prepare_video(ann, str(half), cfg_for(tmp_path / "out", tmp_path, tmp_path / "a.jsonl"))
    assert out.status == KEPT
    issues = json.loads(out.info["issues"])
    past = [i["segment"] for i in issues if i["reason"] in ("time_past_duration", "end_clamped")]
    assert past == [i for i, seg in enumerate(segs) if seg.end > decodable]
    assert [i["reason"] for i in issues].count("truncated") == 1
    clips = json.loads(out.info["clips"])
    assert len(clips) == 2 and all(c["end"] <= decodable for c in clips)
    for s in out.samples:
        rec = json.loads(s["record"])
        offset = 0.0 if rec.get("stream") else rec["clip"]["start"]  # streaming: video seconds
        assert offset + rec["timestamps"][-1] < decodable


def test_whole_videos_are_not_called_truncated(tmp_path, clips_dir, videos):
    """No false alarm on complete files: real footage, VFR, sub-second, the 6-minute pattern."""
    cfg = cfg_for(tmp_path / "out", clips_dir, tmp_path / "unused.jsonl")
    paths = [clips_dir / "full.mp4", *real_videos().values()]
    paths += [videos / n for n in ("vfr.mp4", "short.mp4", "rotated.mp4", "pattern_6min.mp4")]
    for path in paths:
        info = probe_video(path)
        segs = [Segment(0.0, min(info.duration, 60.0), "all of it")]
        out = prepare_video(VideoAnnotation(path.name, path.name, None, segs), str(path), cfg)
        assert out.status == KEPT, path
        assert "truncated" not in out.info["issues"], path
        assert out.info["decode_passes"] == 1, path


def test_job_ledger_has_one_row_per_line(tmp_path, clips_dir, ray_local):
    path = tmp_path / "ann.jsonl"
    path.write_bytes(
        _line("full.mp4", (0, 4, "a pattern"), (4, 10, "more pattern"))
        + _line("half.mp4", (0, 2, "the start"), (3, 9, "past the end"))
        + b'{"video": "x.mp4", "segments": [{"start": 0, "end": 1, "text": "\xc3\x28"}]}\n'
        + json.dumps({"video": "full.mp4", "id": "again", "segments": [1, 2, 3]}).encode()
        + b"\n{not json\n"
    )
    run_video_job(cfg_for(tmp_path / "out", clips_dir, path), progress=False)
    for task in ("caption", "streaming", "grounding"):
        rows = {r["source_key"]: r for r in read_ledger(tmp_path / "out" / task).to_pylist()}
        assert len(rows) == 5, sorted(rows)
        assert rows["full.mp4"]["status"] == KEPT
        assert "truncated" in rows["half.mp4"]["issues"]
        assert rows["ann.jsonl:3"]["reason"] == "bad_line"
        assert rows["ann.jsonl:5"]["reason"] == "bad_line"
        again = rows["again"]
        assert again["status"] == "dropped" and again["reason"] == "no_segments"
        assert [i["reason"] for i in json.loads(again["issues"])] == ["bad_format"] * 3
