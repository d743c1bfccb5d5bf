"""1-fps frame sampling with FFmpeg, matching VideoLLaMA3's own video loader.

VideoLLaMA3 decodes with ffmpeg's ``fps`` filter (``round=down``) to a raw RGB pipe, stamps frame
``k`` with ``k / fps`` seconds from the stream start, and keeps ``linspace(0, n - 1, max_frames)``
(integer-truncated, so the first and last frames stay) when more than ``max_frames`` (180) come
out. We do the same, with two differences that change no frame:

- frames are read from the pipe one at a time and only those that can be selected are kept
  (JPEG-encoded), so memory does not grow with the video's length. Which frames are selected
  depends on the final count ``n``, known only at the end of the stream; ffmpeg's count is
  ``floor(stream duration x fps)`` in practice, so we keep the union of the selections for every
  ``n`` within a small window around that estimate, and decode a second time in the rare case
  the real count falls outside it (``Sampled.passes`` says so);
- one decode of a video serves all of its clips (:func:`decode_grid` with a ``keep`` predicate).

Pixels: ffmpeg applies the stream's rotation (autorotate) and, when ``max_side`` is set, scales
with its default bicubic scaler before the pipe, as VideoLLaMA3 does with its ``size`` option.
"""

from __future__ import annotations

import io
import math
import subprocess
import tempfile
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from video_prep.probe import VideoError, VideoInfo, format_whitelist

#: candidate window around the estimated frame count (see the module docstring)
COUNT_WINDOW = 1

#: ffmpeg decoder threads per video. One: the video job runs one video per reserved CPU, and
#: ffmpeg's default (a thread per core, in every process) oversubscribes the machine. Measured
#: on 2 cores for one 10-min 640x360 H.264 video: 2.9 s wall / 3.6 s CPU with one thread against
#: 3.8 s / 5.2 s with ffmpeg's default (docs/BENCHMARKS.md).
DECODE_THREADS = 1


def uniform_indices(n: int, max_frames: int) -> list[int]:
    """VideoLLaMA3's subsample: all frames when few, else ``linspace`` truncated to int."""
    if n <= max_frames:
        return list(range(n))
    return np.linspace(0, n - 1, max_frames, dtype=int).tolist()


def scaled_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """The frame size after capping the longer side at ``max_side`` (even sizes, for codecs
    and chroma-subsampled JPEG alike)."""
    if not max_side or max(width, height) <= max_side:
        return width, height
    s = max_side / max(width, height)
    return max(2, round(width * s / 2) * 2), max(2, round(height * s / 2) * 2)


def estimated_count(info: VideoInfo, fps: float) -> int:
    return max(1, math.floor(info.stream_duration * fps + 1e-6))


def ffmpeg_command(
    path: str | Path,
    info: VideoInfo,
    fps: float | None,
    size: tuple[int, int],
    threads: int = DECODE_THREADS,
    start: float | None = None,
) -> list[str]:
    """The decode: the chosen stream, ``fps`` filter rounding down, optional scale, raw RGB.
    Without ``fps``: one frame only, the first, or the one shown at ``start`` seconds (an
    accurate seek: ffmpeg decodes from the keyframe before and drops what precedes ``start``).

    ``threads`` is the decoder's thread count (``-threads`` before ``-i``; 0 lets ffmpeg take
    one per core). Decoded pixels do not depend on it."""
    import ffmpeg

    seek = {"ss": f"{start:.6f}"} if start is not None else {}
    allowed = {"format_whitelist": format_whitelist()}  # no playlist reads other files
    stream = ffmpeg.input(str(path), threads=threads, **allowed, **seek)[str(info.stream_index)]
    if fps is not None:
        stream = ffmpeg.filter(stream, "fps", fps=fps, round="down")
    if size != (info.width, info.height):
        stream = ffmpeg.filter(stream, "scale", size[0], size[1])
    kw = {} if fps is not None else {"frames:v": 1}
    out = ffmpeg.output(stream, "pipe:", format="rawvideo", pix_fmt="rgb24", **kw)
    return out.global_args("-nostdin", "-v", "error").compile()


def encode_jpeg(rgb: bytes, size: tuple[int, int], quality: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.frombuffer("RGB", size, rgb, "raw", "RGB", 0, 1).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


@dataclass
class Grid:
    """Frames of the 1-fps grid that a decode kept: index -> JPEG bytes; ``n`` frames in all."""

    fps: float
    size: tuple[int, int]
    n: int = 0
    frames: dict[int, bytes] = field(default_factory=dict)
    decode_s: float = 0.0

    def timestamp(self, k: int) -> float:
        return round(k / self.fps, 6)


def decode_grid(
    path: str | Path,
    info: VideoInfo,
    *,
    fps: float = 1.0,
    max_side: int | None = None,
    keep: Callable[[int, float], bool] = lambda k, t: True,
    quality: int = 90,
    timeout_s: float | None = None,
    threads: int = DECODE_THREADS,
) -> Grid:
    """Decode the video once onto its ``fps`` grid, keeping frame ``k`` (at ``k / fps`` s) when
    ``keep(k, t)``. Raises :class:`VideoError` (``decode_error``, ``decode_timeout``,
    ``no_frames``) instead of returning a partial grid.

    A video shorter than one grid step gives no frame through the ``fps`` filter; it still
    gives one: its first frame, at 0 s."""
    args = (path, info, fps, max_side, keep, quality, timeout_s, threads)
    grid = _decode(*args, first_only=False)
    if grid.n == 0:
        grid = _decode(*args, first_only=True)
    if grid.n == 0:
        raise VideoError("no_frames", "ffmpeg decoded no frame")
    return grid


def decode_frame_at(
    path: str | Path,
    info: VideoInfo,
    t: float,
    *,
    max_side: int | None = None,
    quality: int = 90,
    timeout_s: float | None = None,
    threads: int = DECODE_THREADS,
) -> bytes:
    """The frame shown at ``t`` seconds, as JPEG: for a span the 1-fps grid has no frame in
    (a clip under one grid step), whose frame must come from inside it."""
    # first_only: one frame, whatever the grid's rate (1.0 only names its slot 0)
    args = (path, info, 1.0, max_side, lambda k, _t: True, quality, timeout_s, threads)
    grid = _decode(*args, first_only=True, start=t)
    if not grid.frames:
        raise VideoError("no_frames", f"ffmpeg decoded no frame at {t:.3f} s")
    return grid.frames[0]


def _decode(
    path,
    info,
    fps,
    max_side,
    keep,
    quality,
    timeout_s,
    threads,
    first_only: bool,
    start=None,
    cmd: list[str] | None = None,
    frames: MutableMapping[int, bytes] | None = None,
) -> Grid:
    """``cmd``: a decode of the same grid with more in its filter graph (scene cuts, in
    :mod:`video_prep.scenes`), read the same way. ``frames``: where the kept frames go (default
    a dict; the raw-video job's on-disk :class:`video_prep.raw_frames.FrameStore`)."""
    size = scaled_size(info.width, info.height, max_side)
    grid = Grid(fps=fps, size=size)
    if frames is not None:
        grid.frames = frames  # type: ignore[assignment]  # any mapping of index -> JPEG
    frame_bytes = size[0] * size[1] * 3
    if timeout_s is None:
        timeout_s = max(60.0, 2.0 * info.duration)
    cmd = cmd or ffmpeg_command(path, info, None if first_only else fps, size, threads, start)
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
        assert proc.stdout is not None
        try:
            while True:
                if time.perf_counter() - t0 > timeout_s:
                    raise VideoError("decode_timeout", f"still decoding after {timeout_s:.0f} s")
                buf = proc.stdout.read(frame_bytes)
                if len(buf) < frame_bytes:
                    break
                k = grid.n
                if keep(k, grid.timestamp(k)):
                    grid.frames[k] = encode_jpeg(buf, size, quality)
                grid.n += 1
            rc = proc.wait(timeout=max(1.0, timeout_s - (time.perf_counter() - t0)))
        except subprocess.TimeoutExpired:
            raise VideoError(
                "decode_timeout", f"ffmpeg did not exit in {timeout_s:.0f} s"
            ) from None
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
        err.seek(0)
        stderr = err.read().decode(errors="replace").strip()
    grid.decode_s = time.perf_counter() - t0
    if rc != 0:
        tail = " ".join(stderr.splitlines()[-2:])
        raise VideoError("decode_error", f"ffmpeg exited {rc}: {tail}"[:300])
    return grid


@dataclass
class Sampled:
    """A video's sampled frames: JPEG bytes with their timestamps (seconds from stream start)."""

    frames: list[bytes]
    timestamps: list[float]
    indices: list[int]  # positions on the 1-fps grid
    grid_frames: int  # frames the fps filter produced
    size: tuple[int, int]
    passes: int  # decodes it took (2 when the frame-count estimate missed)
    decode_s: float


def sample_video(
    path: str | Path,
    info: VideoInfo,
    *,
    fps: float = 1.0,
    max_frames: int = 180,
    max_side: int | None = None,
    quality: int = 90,
    timeout_s: float | None = None,
    threads: int = DECODE_THREADS,
) -> Sampled:
    """Frames at ``fps``, uniformly subsampled to at most ``max_frames`` (see module docs)."""
    est = estimated_count(info, fps)
    window = range(max(1, est - COUNT_WINDOW), est + COUNT_WINDOW + 1)
    wanted: set[int] = set()
    for n in window:
        wanted.update(uniform_indices(n, max_frames))
    far = est + COUNT_WINDOW  # frames past every estimate: kept only when few overall
    grid = decode_grid(
        path,
        info,
        fps=fps,
        max_side=max_side,
        keep=lambda k, t: k in wanted or (k >= far and k < max_frames),
        quality=quality,
        timeout_s=timeout_s,
        threads=threads,
    )
    passes, decode_s = 1, grid.decode_s
    indices = uniform_indices(grid.n, max_frames)
    if any(k not in grid.frames for k in indices):  # the estimate missed: decode again, exactly
        exact = set(indices)
        grid = decode_grid(
            path,
            info,
            fps=fps,
            max_side=max_side,
            keep=lambda k, t: k in exact,
            quality=quality,
            timeout_s=timeout_s,
            threads=threads,
        )
        passes, decode_s = 2, decode_s + grid.decode_s
        indices = uniform_indices(grid.n, max_frames)
    return Sampled(
        frames=[grid.frames[k] for k in indices],
        timestamps=[grid.timestamp(k) for k in indices],
        indices=indices,
        grid_frames=grid.n,
        size=grid.size,
        passes=passes,
        decode_s=decode_s,
    )
