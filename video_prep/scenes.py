"""Scene cuts of a raw video, found in the same decode that makes its 1-fps frames, and the clips
planned from them.

The detector is ffmpeg's own scene score (the ``select`` filter's ``scene``: 0 for a repeated
frame, near 1 for a new shot), chosen by measurement against PySceneDetect 0.7.2 (its
``ContentDetector`` and ``AdaptiveDetector``) on a 10-minute 25-fps test pattern with five
planted hard cuts and on ``vtest.avi``: both found the same cuts to the frame, and ffmpeg's pass
ran about 3-4x the frames per second of PySceneDetect's (which decodes the video again with
OpenCV; figures in docs/VIDEO.md, ``bench/bench_scenes.py`` measures it). Above all, ffmpeg's
score rides in the decode the 1-fps grid needs anyway: the video stream is ``split`` in one
filter graph, one branch scored at the full frame rate (``select`` keeps the first frame and
every frame scoring over the threshold, ``metadata`` prints their times to a file), the other
through the same ``fps`` filter (``round=down``) and scaler as the caption-bounded path
(:mod:`video_prep.frames`), so frame ``k`` is stamped ``k / fps`` as there. One decode per video.

Cut times are seconds from the stream's first frame (the grid's origin): a cut at ``t`` is the
first frame of the new shot, so grid frames at ``>= t`` belong to the clip after it.

Clips from shots (:func:`plan_clips`): a shot longer than ``max_len_s`` is split into equal
parts no longer than that (by length: there is no cut to use); a shot shorter than
``min_len_s`` (a flash, a fast montage) is merged into its shorter neighbour when the two fit in
``max_len_s``, the only case a clip spans a cut; what still cannot reach ``min_len_s`` is dropped
(``too_short``). Cuts closer than ``min_shot_s`` to the previous one (a flash of a frame or two
scores twice) count once.
"""

from __future__ import annotations

import itertools
import math
import re
import shutil
import tempfile
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from pathlib import Path

from video_prep.frames import DECODE_THREADS, Grid, _decode, scaled_size
from video_prep.probe import VideoInfo, format_whitelist

#: ffmpeg's scene score over which a frame starts a new shot (ffmpeg's documented example)
SCENE_THRESHOLD = 0.3

_PTS = re.compile(r"pts_time:(-?[0-9.]+(?:e-?\d+)?)")
_SCORE = re.compile(r"lavfi\.scene_score=([0-9.]+)")


def _backslashed(text: str, specials: str) -> str:
    return "".join("\\" + c if c in specials else c for c in text)


def filter_arg(value: str | Path) -> str:
    """``value`` as one option value inside a filter graph, escaped at both of ffmpeg's
    levels (its "Notes on filtergraph escaping"): first as an option value (``\\``, ``'``
    and the ``:`` that separates options), then for the graph parser (``\\``, ``'`` and the
    ``[ ] , ;`` that separate filters and links). A temp dir named ``a:b,c`` would otherwise
    end the option (or the filter) in the middle of the path."""
    return _backslashed(_backslashed(str(value), "\\':"), "\\'[],;")


def scene_command(
    path: str | Path,
    info: VideoInfo,
    fps: float,
    size: tuple[int, int],
    threshold: float,
    meta_path: Path,
    threads: int = DECODE_THREADS,
) -> list[str]:
    """One ffmpeg run: the chosen stream split into a scored branch (cut times into
    ``meta_path``) and the 1-fps grid (raw RGB on stdout, as :func:`frames.ffmpeg_command`)."""
    grid = f"fps=fps={fps}:round=down"
    if size != (info.width, info.height):
        grid += f",scale={size[0]}:{size[1]}"
    graph = (
        f"[0:{info.stream_index}]split=2[d][g];"
        f"[d]select='eq(n\\,0)+gt(scene\\,{threshold})',"
        f"metadata=mode=print:file={filter_arg(meta_path)},nullsink;"
        f"[g]{grid}[out]"
    )
    return [
        "ffmpeg",
        "-nostdin",
        "-v",
        "error",
        "-format_whitelist",
        format_whitelist(),  # no playlist reads other files (probe.REFERENCING_DEMUXERS)
        "-threads",
        str(threads),
        "-i",
        str(path),
        "-filter_complex",
        graph,
        "-map",
        "[out]",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "pipe:",
    ]


def read_cuts(text: str) -> tuple[list[float], list[float]]:
    """Cut times (seconds from the first frame) and their scores from the ``metadata`` print:
    the first entry is the stream's first frame (``eq(n,0)``), every later one a cut."""
    times: list[float] = []
    scores: list[float] = []
    for block in re.split(r"(?m)^(?=frame:)", text):
        m = _PTS.search(block)
        if not m:
            continue
        s = _SCORE.search(block)
        times.append(float(m.group(1)))
        scores.append(float(s.group(1)) if s else 0.0)
    if not times:
        return [], []
    t0 = times[0]
    return [round(t - t0, 6) for t in times[1:]], scores[1:]


@dataclass
class Decoded:
    """One decode of a video: its 1-fps grid (every frame kept) and the cuts found in it."""

    grid: Grid
    cuts: list[float]
    scores: list[float]


def decode_with_cuts(
    path: str | Path,
    info: VideoInfo,
    *,
    fps: float = 1.0,
    threshold: float = SCENE_THRESHOLD,
    max_side: int | None = None,
    quality: int = 90,
    timeout_s: float | None = None,
    threads: int = DECODE_THREADS,
    frames: MutableMapping[int, bytes] | None = None,
) -> Decoded:
    """The grid and the cuts from ONE ffmpeg decode; raises :class:`VideoError` as
    :func:`frames.decode_grid` does (``decode_error``, ``decode_timeout``). A video shorter than
    one grid step gives an empty grid (no clip can be cut from it). ``frames``: where the grid's
    frames go as they arrive (a dict by default; the raw-video job passes a store on disk)."""
    size = scaled_size(info.width, info.height, max_side)
    tmp = Path(tempfile.mkdtemp(prefix="vl3-scenes-"))
    try:
        meta = tmp / "scenes.txt"
        cmd = scene_command(path, info, fps, size, threshold, meta, threads)
        args = (path, info, fps, max_side, lambda k, t: True, quality, timeout_s, threads)
        grid = _decode(*args, first_only=False, cmd=cmd, frames=frames)
        cuts, scores = read_cuts(meta.read_text() if meta.is_file() else "")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Decoded(grid, cuts, scores)


@dataclass
class RawClip:
    """A span of a raw video (seconds from its first frame) and how it came about."""

    index: int
    start: float
    end: float
    cut_start: bool = False  # starts at a detected cut (else at 0 or a split by length)
    cuts_inside: list[float] = field(default_factory=list)  # cuts a merged clip spans
    split: bool = False  # a part of a shot longer than max_len_s
    status: str = "kept"
    reason: str | None = None

    @property
    def length(self) -> float:
        return self.end - self.start

    def summary(self) -> dict:
        return {
            "index": self.index,
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "length": round(self.length, 3),
            "cut_start": self.cut_start,
            "cuts_inside": [round(c, 3) for c in self.cuts_inside],
            "split": self.split,
            "status": self.status,
            "reason": self.reason,
        }


def shot_bounds(cuts: list[float], duration: float, min_shot_s: float) -> list[float]:
    """``[0, cut, ..., duration]``: cuts inside the video, each at least ``min_shot_s`` after
    the previous boundary (a burst of scores over one flash counts once) and before the end."""
    bounds = [0.0]
    for c in sorted(cuts):
        if c - bounds[-1] >= min_shot_s and duration - c > 1e-6:
            bounds.append(c)
    return [*bounds, duration]


def plan_clips(
    cuts: list[float],
    duration: float,
    *,
    max_len_s: float = 120.0,
    min_len_s: float = 2.0,
    min_shot_s: float = 0.2,
) -> list[RawClip]:
    """Clips covering ``[0, duration)`` in order: shots, long ones split by length, short ones
    merged into a neighbour or dropped (see the module doc)."""
    bounds = shot_bounds(cuts, duration, min_shot_s)
    spans: list[RawClip] = []
    for n, (a, b) in enumerate(itertools.pairwise(bounds)):
        parts = max(1, math.ceil((b - a) / max_len_s - 1e-9))
        step = (b - a) / parts
        for j in range(parts):
            end = b if j == parts - 1 else a + (j + 1) * step
            spans.append(RawClip(0, a + j * step, end, n > 0 and j == 0, split=parts > 1))
    while True:  # merge the shortest short span into its shorter neighbour that fits
        short = sorted(
            (i for i, s in enumerate(spans) if s.length < min_len_s),
            key=lambda i: (spans[i].length, i),
        )
        for i in short:
            fits = [
                j
                for j in (i - 1, i + 1)
                if 0 <= j < len(spans) and _joined(spans, i, j) <= max_len_s + 1e-9
            ]
            if fits:
                j = min(fits, key=lambda j: (spans[j].length, j))
                lo, hi = min(i, j), max(i, j)
                spans[lo : hi + 1] = [_merge(spans[lo], spans[hi])]
                break
        else:
            break
    for n, s in enumerate(spans):
        s.index = n
        if s.length < min_len_s:
            s.status, s.reason = "dropped", "too_short"
    return spans


def _joined(spans: list[RawClip], i: int, j: int) -> float:
    return max(spans[i].end, spans[j].end) - min(spans[i].start, spans[j].start)


def _merge(a: RawClip, b: RawClip) -> RawClip:
    """Two neighbours as one clip; the cut between them (if any) is now inside it."""
    inside = [*a.cuts_inside, *([b.start] if b.cut_start else []), *b.cuts_inside]
    return RawClip(0, a.start, b.end, a.cut_start, inside, split=a.split or b.split)
