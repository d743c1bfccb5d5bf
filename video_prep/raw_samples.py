"""Training records of a raw video from its clips and their model-written captions, in the same
three forms as the caption-bounded path (:mod:`video_prep.samples`, DESIGN §5):

- caption: one record per clip and caption kind: ``<video>`` + an instruction (the short or the
  detailed set) -> the clip's caption; frames and timestamps from the clip's start;
- grounding: over a *window* of consecutive clips of one video (at most ``grounding.window_s``,
  at least ``grounding.min_clips`` clips): "When does '<a clip's short caption>' happen?" ->
  that clip's span from the window's start, ``"{s:.1f}-{e:.1f} s"``. A caption that two clips of
  the window share is not asked about (its answer would be ambiguous);
- streaming: over the same window: the clips' short captions, each answered at its clip's end,
  times in seconds of the original video.

A window is a run of kept clips with no dropped clip between them, so every second of it has a
caption. Frames of a window are its clips' 1-fps frames, uniformly capped as everywhere.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from video_prep.annotations import Segment
from video_prep.clips import Clip
from video_prep.frames import uniform_indices
from video_prep.raw_config import RawVideoConfig
from video_prep.samples import ClipFrames, caption_record, grounding_records, streaming_record


@dataclass
class CaptionedClip:
    """A kept clip of a raw video with its frames and captions (times in original seconds)."""

    index: int
    start: float
    end: float
    frames: ClipFrames
    short: str
    detailed: str | None = None


def capped(frames: ClipFrames, max_frames: int) -> ClipFrames:
    """At most ``max_frames`` of them, uniformly (VideoLLaMA3's rule)."""
    pick = uniform_indices(len(frames.frames), max_frames)
    return ClipFrames(
        [frames.indices[i] for i in pick],
        [frames.frames[i] for i in pick],
        [frames.timestamps[i] for i in pick],
        frames.size,
    )


def joined(clips: list[CaptionedClip]) -> ClipFrames:
    """The frames of consecutive clips, in order (they never overlap)."""
    out = ClipFrames([], [], [], clips[0].frames.size)
    for c in clips:
        out.indices += c.frames.indices
        out.frames += c.frames.frames
        out.timestamps += c.frames.timestamps
    return out


def windows(
    clips: list[CaptionedClip], window_s: float, min_clips: int
) -> list[list[CaptionedClip]]:
    """Runs of adjacent kept clips (no dropped clip between), cut greedily at ``window_s``;
    runs shorter than ``min_clips`` clips are left out."""
    out: list[list[CaptionedClip]] = []
    run: list[CaptionedClip] = []
    for c in sorted(clips, key=lambda c: c.index):
        adjacent = run and c.index == run[-1].index + 1
        if not adjacent or c.end - run[0].start > window_s + 1e-9:
            if len(run) >= min_clips:
                out.append(run)
            run = []
        run.append(c)
    if len(run) >= min_clips:
        out.append(run)
    return out


def raw_samples(
    base: str, video_id: str, clips: list[CaptionedClip], cfg: RawVideoConfig, model: str
) -> list[dict]:
    """Every task's samples of one video: ``{task, key, record (JSON), frames}`` each."""
    out: list[dict] = []
    max_frames = cfg.frames.max_frames

    def add(task: str, rec: dict | None, cf: ClipFrames, extra: dict) -> None:
        if rec is not None:
            rec.update(extra)
            n = len(rec["frames"])
            out.append(
                {
                    "task": task,
                    "key": rec["key"],
                    "record": json.dumps(rec),
                    "frames": cf.frames[:n],
                }
            )

    if "caption" in cfg.tasks:
        kinds = (
            ("s", "short", cfg.caption.short_instructions),
            ("d", "detailed", cfg.caption.instructions),
        )
        for c in clips:
            cf = capped(c.frames, max_frames)
            for tag, kind, instructions in kinds:
                text = getattr(c, kind)
                if not text:
                    continue
                clip = Clip(c.index, c.start, c.end, [Segment(c.start, c.end, text)])
                key = f"{base}_c{tag}{c.index:03d}"
                rec = caption_record(key, clip, cf, video_id, instructions, cfg.seed)
                add("caption", rec, cf, {"caption_kind": kind, "caption_model": model})
    wins = windows(clips, cfg.grounding.window_s, cfg.grounding.min_clips)
    for w, win in enumerate(wins):
        frames = joined(win)
        span = (win[0].start, win[-1].end)
        extra = {"caption_model": model, "clips": [c.index for c in win]}
        if "grounding" in cfg.tasks:
            texts = [c.short.strip().rstrip(".").lower() for c in win]
            segs = [
                Segment(c.start, c.end, c.short)
                for c, t in zip(win, texts, strict=True)
                if texts.count(t) == 1
            ]
            if segs:
                cf = capped(frames, max_frames)
                clip = Clip(w, *span, segs)
                g = cfg.grounding
                for rec in grounding_records(
                    f"{base}_g{w:03d}",
                    clip,
                    cf,
                    video_id,
                    g.questions,
                    cfg.seed,
                    g.turns_per_sample,
                ):
                    add("grounding", rec, cf, extra)
        if "streaming" in cfg.tasks:
            clip = Clip(w, *span, [Segment(c.start, c.end, c.short) for c in win])
            s = cfg.streaming
            rec = streaming_record(
                f"{base}_s{w:03d}", clip, frames, video_id, s.instructions, cfg.seed, s.max_frames
            )
            add("streaming", rec, frames, extra)
    return out
