"""Scene cuts found in the 1-fps decode (real ffmpeg on generated videos with planted cuts), and
clips planned from shots: split by length, short shots merged, never across a cut when
avoidable."""

from __future__ import annotations

from pathlib import Path

import pytest

from video_prep.frames import decode_grid
from video_prep.probe import probe_video
from video_prep.sample_videos import _ffmpeg, cuts_video, pattern_video
from video_prep.scenes import decode_with_cuts, plan_clips, read_cuts, shot_bounds

FRAME_25 = 1 / 25


@pytest.fixture(scope="module")
def cut_video(tmp_path_factory) -> tuple[Path, list[float]]:
    """Hard cuts at 2.0, 3.48, 6.48 and 8.68 s (25 fps: two of them between grid seconds)."""
    path = tmp_path_factory.mktemp("scenes") / "cuts.mp4"
    return path, cuts_video(path, [2.0, 1.48, 3.0, 2.2, 2.0])


@pytest.fixture(scope="module")
def decoded(cut_video):
    path, _ = cut_video
    info = probe_video(path)
    return info, decode_with_cuts(path, info, max_side=96)


def test_cuts_are_found_within_one_frame(cut_video, decoded):
    _, planted = cut_video
    _, dec = decoded
    assert len(dec.cuts) == len(planted)
    for found, want in zip(dec.cuts, planted, strict=True):
        assert abs(found - want) <= FRAME_25 + 1e-6
    assert all(s > 0.3 for s in dec.scores)


def test_the_grid_is_the_caption_bounded_paths_grid(cut_video, decoded):
    """Same fps filter, rounding, scaler and JPEG: the scored decode changes no frame."""
    path, _ = cut_video
    info, dec = decoded
    plain = decode_grid(path, info, fps=1.0, max_side=96)
    assert dec.grid.n == plain.n == 10
    assert dec.grid.frames == plain.frames
    assert dec.grid.size == plain.size


def test_clips_follow_the_cuts(cut_video, decoded):
    _, planted = cut_video
    info, dec = decoded
    clips = plan_clips(dec.cuts, info.stream_duration, max_len_s=120, min_len_s=1.0)
    assert [round(c.start, 2) for c in clips] == [0.0, *[round(t, 2) for t in planted]]
    assert all(c.status == "kept" and not c.cuts_inside for c in clips)
    assert [c.cut_start for c in clips] == [False, True, True, True, True]
    # each clip's grid frames lie on its own side of the cuts
    grid = dec.grid
    for c in clips:
        ts = [grid.timestamp(k) for k in grid.frames if c.start <= grid.timestamp(k) < c.end]
        assert ts and all(c.start <= t < c.end for t in ts)


def test_a_long_video_without_cuts_is_split_by_length(tmp_path):
    path = pattern_video(tmp_path / "long.mp4", 12)
    info = probe_video(path)
    dec = decode_with_cuts(path, info, max_side=64)
    assert dec.cuts == []  # the test pattern's clock moves, it never cuts
    clips = plan_clips(dec.cuts, info.stream_duration, max_len_s=5, min_len_s=1.0)
    assert [(c.start, c.end) for c in clips] == [(0.0, 4.0), (4.0, 8.0), (8.0, 12.0)]
    assert all(c.split and c.status == "kept" for c in clips)


def test_a_static_video_is_one_clip(tmp_path):
    path = tmp_path / "static.mp4"
    _ffmpeg(
        "-f", "lavfi", "-i", "smptebars=duration=6:size=96x64:rate=25",
        "-pix_fmt", "yuv420p", "-c:v", "libx264", "-preset", "ultrafast", str(path),
    )  # fmt: skip
    info = probe_video(path)
    dec = decode_with_cuts(path, info)
    assert dec.cuts == []
    clips = plan_clips(dec.cuts, info.stream_duration)
    assert len(clips) == 1 and (clips[0].start, clips[0].end) == (0.0, 6.0)


def test_short_shots_merge_into_the_shorter_neighbour_and_never_exceed_the_limit():
    # shots 0-10, 10-10.5 (a flash), 10.5-13, 13-30
    clips = plan_clips([10.0, 10.5, 13.0], 30.0, max_len_s=20, min_len_s=2.0)
    assert [(c.start, c.end) for c in clips] == [(0.0, 10.0), (10.0, 13.0), (13.0, 30.0)]
    assert clips[1].cuts_inside == [10.5] and clips[1].cut_start
    assert all(c.status == "kept" and c.length <= 20 for c in clips)
    # no neighbour has room: the flash stays alone, too short, dropped with its reason
    clips = plan_clips([10.0, 10.5], 20.5, max_len_s=10, min_len_s=2.0)
    assert [(c.start, c.end, c.status, c.reason) for c in clips] == [
        (0.0, 10.0, "kept", None),
        (10.0, 10.5, "dropped", "too_short"),
        (10.5, 20.5, "kept", None),
    ]


def test_long_shots_split_into_equal_parts_at_most_the_limit():
    clips = plan_clips([250.0], 300.0, max_len_s=120, min_len_s=2.0)
    assert [(round(c.start, 3), round(c.end, 3)) for c in clips] == [
        (0.0, 83.333),
        (83.333, 166.667),
        (166.667, 250.0),
        (250.0, 300.0),
    ]
    assert [c.split for c in clips] == [True, True, True, False]
    assert not any(c.cuts_inside for c in clips)


def test_a_burst_of_scores_counts_once_and_cuts_at_the_ends_are_ignored():
    assert shot_bounds([3.0, 3.04, 3.08, 9.99], 10.0, 0.2) == [0.0, 3.0, 9.99, 10.0]
    assert shot_bounds([0.1, 10.0], 10.0, 0.2) == [0.0, 10.0]


def test_read_cuts_is_relative_to_the_first_frame():
    text = (
        "frame:0    pts:1000 pts_time:0.08\nlavfi.scene_score=0.000000\n"
        "frame:1    pts:38500 pts_time:3.08\nlavfi.scene_score=0.812345\n"
    )
    assert read_cuts(text) == ([3.0], [0.812345])
    assert read_cuts("") == ([], [])


def test_a_temp_dir_with_ffmpeg_separators_in_its_name_still_finds_the_cuts(
    cut_video, decoded, tmp_path, monkeypatch
):
    """The cut times go to a file in the temp dir, named inside the filter graph: a ``:`` or
    ``,`` (or a quote, a bracket, a ``;``) in it must not end the option or the filter."""
    import tempfile

    path, _ = cut_video
    info, ref = decoded
    odd = tmp_path / "a:b,c'd[e];f\\g"
    odd.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(odd))
    dec = decode_with_cuts(path, info, max_side=96)
    assert dec.cuts == ref.cuts and len(dec.cuts) == 4
    assert dec.grid.frames == ref.grid.frames
    assert list(odd.iterdir()) == []  # its own temp dir is gone
