"""A video sample's frames as one MP4 file that VideoLLaMA3's loader reads back exactly.

VideoLLaMA3's ``load_video`` (``videollama3/mm_utils.py``) takes a video *file* through ffmpeg:
ffmpeg's ``fps`` filter (``round=down``; ``--fps 1`` in every published stage script), frame
``k`` stamped ``start + k / fps`` from the stream's start, and for a streaming record
``-ss``/``-t`` from its ``start_time``/``end_time``. A folder of frames it reads instead as a
3-fps sequence (``vid_fps = 3``), which would keep a third of our 1-fps frames and stamp them at
a third of their time. So each video sample becomes a file:

- the frames' JPEG bytes stream-copied into an MP4 (``-c copy``: MJPEG, no re-encoding, the
  same bytes and pixels; stream-copied out they are the shard's members again);
- the file starts with the first frame: frame ``k`` at ``timestamps[k] - timestamps[0]``
  (millisecond time base), the last one lasting one frame step. On this grid ffmpeg's ``fps``
  filter at the set's rate gives back every frame, once, in order, whole file or trimmed
  (``tests/export/test_mux.py``: 1 to 120 frames, steps of 0.5 to 2 s). A file not starting at 0 is
  not read right by that loader: its ``-ss`` counts from the file's start and the MP4 muxer
  shortens the last frame; a streaming record's times move to the file's clock instead
  (``export.layouts.stream_in_file``);
- ``-fflags +bitexact`` and no metadata: the same frames give the same bytes on every run.

Frames must be JPEG and of one size (a video track has one frame size). Frames that are not
evenly spaced (a clip longer than ``frames.max_frames`` at the set's rate, subsampled) keep
their times in the file, but a loader sampling at a fixed rate takes the frames its grid meets.
"""

from __future__ import annotations

import itertools
import subprocess
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from export.records import Skip

LIST_NAME = "frames.ffconcat"


def _ms(t: float) -> int:
    return round(t * 1000)


def frame_step_ms(timestamps: list[float]) -> int:
    """How long the last frame lasts: the set's frame step (the smallest gap); a video of one
    frame has no step of its own and lasts 1 s, the step of the paper's 1 fps."""
    gaps = [_ms(b) - _ms(a) for a, b in itertools.pairwise(timestamps)]
    return min(gaps) if gaps else 1000


def _check_sizes(frames: list[Path]) -> None:
    sizes = set()
    for f in frames:
        try:
            with Image.open(f) as im:
                if im.format != "JPEG":
                    raise Skip("frame_not_jpeg")
                sizes.add(im.size)
        except (UnidentifiedImageError, OSError):
            raise Skip("frame_not_jpeg") from None
    if len(sizes) > 1:
        raise Skip("frame_sizes_differ")


def concat_list(frames: list[Path], timestamps: list[float]) -> str:
    """ffmpeg's concat script: each frame file for the gap to the next one (ms time base)."""
    step = frame_step_ms(timestamps)
    ms = [_ms(t) - _ms(timestamps[0]) for t in timestamps]
    lines = ["ffconcat version 1.0"]
    for k, f in enumerate(frames):
        d = (ms[k + 1] - ms[k]) if k + 1 < len(ms) else step
        lines += [f"file {f.name}", "option framerate 1000", f"duration {d / 1000:.3f}"]
    return "\n".join(lines) + "\n"


def frames_to_mp4(frames: list[Path], timestamps: list[float], dest: Path) -> None:
    """Write ``frames`` (JPEG files in one folder, safe names) shown at ``timestamps`` (less
    the first) to ``dest`` (MP4, MJPEG stream-copied). :class:`Skip` when they cannot be one
    video track."""
    _check_sizes(frames)
    folder, step = frames[0].parent, frame_step_ms(timestamps)
    (folder / LIST_NAME).write_text(concat_list(frames, timestamps))
    cmd = [
        "ffmpeg",
        "-nostdin",
        "-v",
        "error",
        "-y",
        "-f",
        "concat",
        "-safe",
        "0",
        "-i",
        LIST_NAME,
        "-c",
        "copy",
        "-bsf:v",  # the last frame lasts one step: ffmpeg's fps filter then gives it back
        f"setts=duration={step}",
        "-video_track_timescale",  # milliseconds: the timestamps as the record has them
        "1000",
        "-map_metadata",
        "-1",
        "-fflags",
        "+bitexact",
        "-f",
        "mp4",
        str(dest.resolve()),
    ]
    try:
        proc = subprocess.run(cmd, cwd=folder, capture_output=True, text=True, timeout=600)
    except FileNotFoundError:
        raise RuntimeError(
            "ffmpeg is not installed; a video sample needs it (Debian/Ubuntu: apt-get install "
            "ffmpeg)"
        ) from None
    finally:
        (folder / LIST_NAME).unlink(missing_ok=True)
    if proc.returncode != 0:
        dest.unlink(missing_ok=True)
        raise RuntimeError(f"ffmpeg could not write {dest}: {proc.stderr.strip()[-500:]}")
