"""Clips of at most max_len_s, cut at caption boundaries; density bounds drop with a reason."""

from __future__ import annotations

from video_prep.annotations import Segment
from video_prep.clips import cut_clips


def segs(*spans: tuple[float, float]) -> list[Segment]:
    return [Segment(s, e, f"event {i}") for i, (s, e) in enumerate(spans)]


def test_a_short_video_is_one_clip_over_the_whole_video():
    clips, unfit = cut_clips(segs((2, 5), (6, 9)), 30.0, max_len_s=120)
    assert unfit == [] and len(clips) == 1
    assert (clips[0].start, clips[0].end, len(clips[0].segments)) == (0.0, 30.0, 2)


def test_long_video_is_cut_at_caption_boundaries_into_clips_of_at_most_max_len():
    s = segs(*[(t, t + 25) for t in range(0, 350, 30)])  # 12 captions over 6 minutes
    clips, unfit = cut_clips(s, 360.0, max_len_s=120)
    assert unfit == []
    assert [(c.start, c.end) for c in clips] == [(0, 115), (120, 235), (240, 355)]
    assert all(c.length <= 120 for c in clips)
    assert sum(len(c.segments) for c in clips) == 12  # every caption in exactly one clip
    bounds = {x for sg in s for x in (sg.start, sg.end)}
    assert all(c.start in bounds and c.end in bounds for c in clips)


def test_overlapping_captions_stay_whole():
    clips, _ = cut_clips(segs((0, 50), (40, 110), (100, 130), (125, 200)), 300.0, max_len_s=120)
    assert [(c.start, c.end) for c in clips] == [(0, 110), (100, 200)]
    for c in clips:
        assert all(c.start <= sg.start and sg.end <= c.end for sg in c.segments)


def test_a_caption_longer_than_a_clip_is_reported():
    clips, unfit = cut_clips(segs((0, 10), (20, 200), (210, 220)), 400.0, max_len_s=120)
    assert unfit == [(1, "segment_too_long")]
    assert [(c.start, c.end) for c in clips] == [(0, 10), (210, 220)]


def test_density_bounds_drop_clips_with_reasons():
    sparse = segs((0, 100), (100, 110))  # 2 captions in 110 s: 1.09 per minute
    clips, _ = cut_clips(sparse, 600.0, max_len_s=120, min_per_min=1.5, max_per_min=10)
    assert [(c.status, c.reason) for c in clips] == [("dropped", "captions_too_sparse")]
    dense = segs(*[(t, t + 1) for t in range(0, 60)])
    clips, _ = cut_clips(dense, 200.0, max_len_s=120, min_per_min=0.5, max_per_min=30)
    assert {c.reason for c in clips} == {"captions_too_dense"}
    ok = segs((0, 30), (30, 60), (60, 90))
    clips, _ = cut_clips(ok, 200.0, max_len_s=120, min_per_min=0.5, max_per_min=30)
    assert [c.status for c in clips] == ["kept"]


def test_short_clips_are_not_judged_by_density():
    clips, _ = cut_clips(segs((0, 0.5)), 0.5, max_per_min=30, density_min_len_s=10)
    assert clips[0].status == "kept"
    clips, _ = cut_clips(segs((0, 0.5)), 0.5, max_per_min=30, density_min_len_s=0)
    assert clips[0].reason == "captions_too_dense"


def test_a_video_without_usable_captions_has_no_clip():
    assert cut_clips([], 5.0) == ([], [])
    clips, unfit = cut_clips(segs((0, 300)), 100.0, max_len_s=60)
    assert clips == [] and unfit == [(0, "segment_too_long")]
