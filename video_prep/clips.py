"""Cutting long videos into clips of at most two minutes at dense-caption boundaries.

A clip starts where its first caption starts and ends where its last caption ends; captions are
taken in start order while the clip still fits in ``max_len_s``. A video no longer than
``max_len_s`` is one clip covering the whole video. A clip keeps a caption only whole (never cut
in two); a single caption longer than ``max_len_s`` cannot fit any clip and is reported. Clips
whose caption density (captions per minute) falls outside the configured bounds are dropped with
a reason (the ledger keeps them); clips shorter than ``density_min_len_s`` are not judged sparse,
since a single caption on a few-second video says nothing about density, and are judged dense as
if they were ``density_min_len_s`` long (more captions than such a clip may hold is too dense).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


class SegmentLike(Protocol):
    start: float
    end: float
    text: str


@dataclass
class Clip:
    """A span of the original video and the captions inside it (times in original seconds)."""

    index: int
    start: float
    end: float
    segments: list = field(default_factory=list)
    status: str = "kept"
    reason: str | None = None

    @property
    def length(self) -> float:
        return self.end - self.start

    @property
    def per_min(self) -> float:
        return len(self.segments) / max(self.length, 1e-6) * 60.0

    def summary(self) -> dict:
        return {
            "index": self.index,
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "length": round(self.length, 3),
            "captions": len(self.segments),
            "per_min": round(self.per_min, 3),
            "status": self.status,
            "reason": self.reason,
        }


def cut_clips(
    segments: list[SegmentLike],
    duration: float,
    *,
    max_len_s: float = 120.0,
    min_per_min: float = 0.0,
    max_per_min: float = float("inf"),
    density_min_len_s: float = 0.0,
) -> tuple[list[Clip], list[tuple[int, str]]]:
    """Clips of a video, and ``(segment position, reason)`` for captions that fit no clip."""
    order = sorted(range(len(segments)), key=lambda i: (segments[i].start, segments[i].end))
    too_long = [
        (i, "segment_too_long") for i in order if segments[i].end - segments[i].start > max_len_s
    ]
    usable = [segments[i] for i in order if segments[i].end - segments[i].start <= max_len_s]
    clips: list[Clip] = []
    if duration <= max_len_s:
        if usable:  # a clip without a caption has nothing to train on
            clips.append(Clip(0, 0.0, duration, usable))
    else:
        current: list = []
        for seg in usable:
            if current and seg.end - current[0].start > max_len_s:
                clips.append(_span(len(clips), current))
                current = []
            current.append(seg)
        if current:
            clips.append(_span(len(clips), current))
    for c in clips:
        if c.length < density_min_len_s:
            # one caption on a 3 s video is neither too sparse nor too dense; but a short clip
            # still cannot hold more captions than a clip of density_min_len_s may
            # (1,000 captions on 3 s would be 1,000 grounding samples of the same frames)
            if len(c.segments) / density_min_len_s * 60.0 > max_per_min:
                c.status, c.reason = "dropped", "captions_too_dense"
            continue
        if c.per_min < min_per_min:
            c.status, c.reason = "dropped", "captions_too_sparse"
        elif c.per_min > max_per_min:
            c.status, c.reason = "dropped", "captions_too_dense"
    return clips, too_long


def _span(index: int, segs: list) -> Clip:
    return Clip(index, segs[0].start, max(s.end for s in segs), list(segs))
