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
from manifests.schema import KEPT
from video_prep.annotations import Segment, VideoAnnotation, load_annotations
from video_prep.config import VideoConfig
from video_prep.job import plan_inputs
from video_prep.probe import probe_video


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
