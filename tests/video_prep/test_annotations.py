"""The four annotation layouts parse into the same form, and every bad input becomes an issue."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from video_prep.annotations import (
    FORMATS,
    AnnotationIssue,
    Segment,
    VideoAnnotation,
    check_against_duration,
    is_safe_relative,
    load_annotations,
    resolve_video,
)

FIXTURES = Path(__file__).parent / "fixtures"


def _keys(issues: list[AnnotationIssue]) -> list[tuple[str, int | None, str]]:
    return [(i.video_id, i.segment_index, i.reason) for i in issues]


def test_formats() -> None:
    assert FORMATS == ("activitynet", "youcook2", "charades", "jsonl")


def test_activitynet() -> None:
    videos, issues = load_annotations(FIXTURES / "activitynet.json", "activitynet")

    assert [v.video_id for v in videos] == ["v_good01", "v_bad02", "v_nodur", "v_nandur"]
    good, bad, nodur, nandur = videos
    assert good == VideoAnnotation(
        "v_good01",
        None,
        82.7,
        [
            Segment(0.0, 10.5, "A man walks into the room."),
            Segment(10.5, 82.7, "He sits down on a chair."),  # 0.3 s past: clamped silently
            Segment(20.0, 82.7, "He leaves."),  # 1.3 s past: clamped and reported
        ],
    )
    assert bad.segments == [Segment(3.0, 4.0, "kept")]
    assert nodur == VideoAnnotation(
        "v_nodur", None, None, [Segment(0.0, 500.0, "no duration, so no clamping")]
    )
    assert nandur.duration is None
    assert nandur.segments == [Segment(0.0, 1.0, "kept without a duration")]
    assert _keys(issues) == [
        ("v_good01", 2, "end_clamped"),
        ("v_bad02", 0, "end_before_start"),
        ("v_bad02", 1, "time_past_duration"),
        ("v_bad02", 2, "nan_time"),
        ("v_bad02", 3, "negative_time"),
        ("v_bad02", 4, "empty_sentence"),
        ("v_bad02", 6, "bad_format"),
        ("v_bad02", 7, "bad_format"),
        ("v_mismatch", None, "bad_format"),
        ("v_nandur", None, "nan_time"),
        ("v_good01", None, "duplicate_id"),
    ]
    assert "84.0" in issues[0].detail


def test_youcook2() -> None:
    videos, issues = load_annotations(FIXTURES / "youcook2.json", "youcook2")

    assert [v.video_id for v in videos] == ["GLd3aX16zBg", "xHr8X2Wpmno", "testOnly123"]
    first, second, test_only = videos
    assert first == VideoAnnotation(
        "GLd3aX16zBg",
        "training/113/GLd3aX16zBg",
        241.62,
        [
            Segment(90.0, 102.0, "spread margarine on two slices of white bread"),
            Segment(114.0, 127.0, "place a slice of cheese on the bread"),
        ],
    )
    assert second.video == "validation/201/xHr8X2Wpmno"  # an integer recipe type
    assert second.segments == [Segment(0.0, 60.0, "end within the tolerance")]
    assert test_only.segments == []  # the test split has no annotations: kept, not an issue
    assert _keys(issues) == [
        ("GLd3aX16zBg", 2, "time_past_duration"),
        ("GLd3aX16zBg", 3, "end_before_start"),
        ("GLd3aX16zBg", 4, "nan_time"),
        ("GLd3aX16zBg", 5, "empty_sentence"),
        ("GLd3aX16zBg", None, "duplicate_id"),
    ]


def test_charades() -> None:
    videos, issues = load_annotations(FIXTURES / "charades_sta.txt", "charades")

    assert videos == [
        VideoAnnotation("3MSZA", None, None, [Segment(24.3, 30.4, "person turn a light on.")]),
        VideoAnnotation(
            "AO8RW", None, None, [Segment(0.0, 6.9, "a person is putting a book on a shelf.")]
        ),
    ]
    assert _keys(issues) == [
        ("", None, "bad_line"),
        ("", None, "bad_line"),
        ("", None, "bad_line"),
        ("3MSZA", 1, "end_before_start"),
        ("3MSZA", 2, "nan_time"),
        ("AO8RW", 1, "negative_time"),
        ("AO8RW", 2, "empty_sentence"),
    ]
    assert [i.detail.split(":")[0] for i in issues[:3]] == ["line 5", "line 6", "line 10"]


def test_jsonl() -> None:
    videos, issues = load_annotations(FIXTURES / "segments.jsonl", "jsonl")

    assert videos == [
        VideoAnnotation(
            "a",
            "cooking/a.mp4",
            20.0,
            [Segment(0.0, 5.0, "chop the onions"), Segment(5.0, 20.0, "fry them")],
        ),
        VideoAnnotation("b.mkv", "b.mkv", None, [Segment(1.5, 3.0, "open the door")]),
        VideoAnnotation("7", None, None, [Segment(0.0, 1.0, "an integer id")]),
    ]
    assert _keys(issues) == [
        ("a", 1, "end_clamped"),
        ("b.mkv", 1, "nan_time"),
        ("b.mkv", 2, "end_before_start"),
        ("b.mkv", 3, "bad_format"),
        ("b.mkv", 4, "bad_format"),
        ("abs", None, "unsafe_path"),
        ("dotdot", None, "unsafe_path"),
        ("dotdot2", None, "unsafe_path"),
        ("a", None, "duplicate_id"),
        ("", None, "bad_line"),
        ("", None, "bad_line"),
        ("", None, "bad_line"),
    ]
    assert [i.detail.split(":")[0] for i in issues[-3:]] == ["line 7", "line 8", "line 11"]


def test_jsonl_odd_records(tmp_path: Path) -> None:
    path = tmp_path / "odd.jsonl"
    lines = [
        '{"id": "", "segments": []}',
        '{"id": true, "segments": []}',
        '{"video": 5, "segments": []}',
        '{"video": "x.mp4"}',
        '{"video": "x.mp4", "duration": "12.5", "segments": ["5", {"start": "1", "end": "2.5", '
        '"text": " numeric strings "}, {"start": 0, "end": 1e999, "text": "infinite"}]}',
        '{"video": "y.mp4", "duration": -3, "segments": [{"start": 0, "end": 1, "text": "kept"}]}',
    ]
    path.write_text("\n".join(lines) + "\n")
    videos, issues = load_annotations(path, "jsonl")

    assert videos == [
        VideoAnnotation("x.mp4", "x.mp4", 12.5, [Segment(1.0, 2.5, "numeric strings")]),
        VideoAnnotation("y.mp4", "y.mp4", None, [Segment(0.0, 1.0, "kept")]),
    ]
    assert _keys(issues) == [
        ("", None, "bad_line"),
        ("", None, "bad_line"),
        ("", None, "bad_line"),
        ("", None, "bad_line"),
        ("x.mp4", 0, "bad_format"),
        ("x.mp4", 2, "nan_time"),
        ("y.mp4", None, "negative_time"),
    ]


@pytest.mark.parametrize(
    ("fmt", "content"),
    [
        ("activitynet", "[1, 2]"),  # wrong shape
        ("activitynet", '{"v_x": {"duration": 3'),  # truncated
        ("youcook2", '{"videos": {}}'),  # no database
        ("activitynet", b'{"v_x": "\xc3\x28"}'),  # not UTF-8: one JSON document, one issue
    ],
)
def test_unreadable_file_is_one_bad_format_issue(
    tmp_path: Path, fmt: str, content: str | bytes
) -> None:
    path = tmp_path / "ann"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    videos, issues = load_annotations(path, fmt)
    assert videos == []
    assert _keys(issues) == [("", None, "bad_format")]
    assert str(path) in issues[0].detail


@pytest.mark.parametrize(
    ("fmt", "content"), [("charades", b"\xff\xfe\x00bad"), ("jsonl", b"\xc3\x28")]
)
def test_a_line_that_is_not_utf8_is_one_bad_line(tmp_path: Path, fmt: str, content: bytes) -> None:
    """Line-oriented files are decoded line by line (tests/video_prep/test_hostile_inputs.py)."""
    path = tmp_path / "ann"
    path.write_bytes(content)
    videos, issues = load_annotations(path, fmt)
    assert videos == []
    assert _keys(issues) == [("", None, "bad_line")]
    assert issues[0].detail.startswith("line 1: not UTF-8")


def test_missing_file_and_unknown_format(tmp_path: Path) -> None:
    videos, issues = load_annotations(str(tmp_path / "nope.json"), "activitynet")
    assert (videos, _keys(issues)) == ([], [("", None, "bad_format")])
    assert "nope.json" in issues[0].detail
    with pytest.raises(ValueError, match="unknown annotation format"):
        load_annotations(tmp_path / "nope.json", "msrvtt")


def test_check_against_duration() -> None:
    ann = VideoAnnotation(
        "vid",
        "vid.mp4",
        None,
        [
            Segment(0.0, 5.0, "a"),
            Segment(5.0, 10.5, "within the tolerance"),
            Segment(8.0, 10.51, "past the tolerance"),
            Segment(10.0, 11.0, "starts at the end"),
            Segment(12.0, 13.0, "starts after the end"),
        ],
    )
    checked, issues = check_against_duration(ann, 10.0)

    assert checked == VideoAnnotation(
        "vid",
        "vid.mp4",
        10.0,
        [
            Segment(0.0, 5.0, "a"),
            Segment(5.0, 10.0, "within the tolerance"),
            Segment(8.0, 10.0, "past the tolerance"),
        ],
    )
    assert _keys(issues) == [
        ("vid", 2, "end_clamped"),
        ("vid", 3, "time_past_duration"),
        ("vid", 4, "time_past_duration"),
    ]
    assert ann.segments[1].end == 10.5  # the input is not changed
    with pytest.raises(ValueError):
        check_against_duration(ann, math.nan)
    with pytest.raises(ValueError):
        check_against_duration(ann, -1.0)


@pytest.mark.parametrize(
    ("path", "safe"),
    [
        ("a.mp4", True),
        ("dir/sub/a.mp4", True),
        ("dir/..hidden.mp4", True),
        ("", False),
        ("/abs/a.mp4", False),
        ("../a.mp4", False),
        ("dir/../../a.mp4", False),
        ("C:\\videos\\a.mp4", False),
        ("dir\\..\\..\\a.mp4", False),
        ("a\0.mp4", False),
    ],
)
def test_is_safe_relative(path: str, safe: bool) -> None:
    assert is_safe_relative(path) is safe


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0")
    return path


def test_resolve_video_candidates(tmp_path: Path) -> None:
    root = tmp_path / "videos"
    with_prefix = _touch(root / "v_abc.mp4")
    without_prefix = _touch(root / "xyz.webm")
    nested = _touch(root / "training/113/GLd3aX16zBg.mkv")
    exact = _touch(root / "cooking/a.mp4")
    _touch(root / "a.mp4")
    (root / "v_dir.mp4").mkdir()

    assert resolve_video(root, VideoAnnotation("v_abc", None, None)) == with_prefix
    assert resolve_video(root, VideoAnnotation("v_xyz", None, None)) == without_prefix
    hint = VideoAnnotation("GLd3aX16zBg", "training/113/GLd3aX16zBg", None)
    assert resolve_video(root, hint) == nested
    assert resolve_video(root, VideoAnnotation("a", "cooking/a.mp4", None)) == exact
    # a hint naming a file is exact: no falling back to the id when it is missing
    assert resolve_video(root, VideoAnnotation("a", "cooking/b.mp4", None)) is None
    assert resolve_video(root, VideoAnnotation("missing", None, None)) is None
    assert resolve_video(root, VideoAnnotation("v_dir", None, None)) is None  # not a file


def test_resolve_video_stays_under_the_root(tmp_path: Path) -> None:
    root = tmp_path / "videos"
    secret = _touch(tmp_path / "secret.mp4")
    inside = _touch(root / "real.mp4")
    (root / "escape.mp4").symlink_to(secret)
    (root / "alias.mp4").symlink_to(inside)
    linked_root = tmp_path / "root_link"
    linked_root.symlink_to(root, target_is_directory=True)

    assert resolve_video(root, VideoAnnotation("escape", None, None)) is None
    assert resolve_video(root, VideoAnnotation("x", "escape.mp4", None)) is None
    assert resolve_video(root, VideoAnnotation("../secret", None, None)) is None
    assert resolve_video(root, VideoAnnotation("x", "../secret.mp4", None)) is None
    assert resolve_video(root, VideoAnnotation("x", str(secret), None)) is None
    assert resolve_video(root, VideoAnnotation("alias", None, None)) == inside
    assert resolve_video(linked_root, VideoAnnotation("real", None, None)) == inside


def test_resolve_video_tries_the_configured_extensions(tmp_path):
    from video_prep.annotations import VideoAnnotation, resolve_video

    (tmp_path / "clip7.m4v").write_bytes(b"x")
    ann = VideoAnnotation("clip7", None, None, [])
    assert resolve_video(tmp_path, ann) is None  # .m4v is not a default extension
    assert resolve_video(tmp_path, ann, (".mp4", ".m4v")) == (tmp_path / "clip7.m4v").resolve()
