"""Probing a video with ffprobe (through ffmpeg-python) before any frame is decoded.

A bad file never raises past this module: :func:`probe_video` raises :class:`VideoError` with a
ledger reason (``missing_video``, ``corrupt_container``, ``no_video_stream``, ``zero_duration``)
and the job records it. Rotation and variable frame rate are not errors: they are recorded, and
the decoder handles them (ffmpeg rotates frames upright; the ``fps`` filter resamples VFR input
onto the same 1-fps grid as constant-rate input).
"""

from __future__ import annotations

import functools
import math
import re
import subprocess
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

PROBE_TIMEOUT_S = 60.0

#: demuxers that read other files or addresses named inside the input (playlists, manifests,
#: image sequences, network sessions) or need no file at all: a text file named ``.mp4`` that
#: holds an HLS playlist listing ``/home/someone/secret.mp4`` would otherwise make ffprobe and
#: ffmpeg read that file, outside the videos folder. They are left out of every input's
#: ``format_whitelist``, so such a file is refused before anything it names is opened.
REFERENCING_DEMUXERS = frozenset(
    {"hls", "applehttp", "dash", "concat", "imf", "image2", "sdp", "rtp", "rtsp", "sap", "lavfi"}
)


@functools.cache
def format_whitelist() -> str:
    """ffmpeg's ``format_whitelist`` for every video we open: each demuxer of the installed
    ffmpeg but :data:`REFERENCING_DEMUXERS` (an empty list, if ffprobe lists none, refuses
    everything rather than nothing)."""
    try:
        listing = subprocess.run(
            ["ffprobe", "-hide_banner", "-v", "quiet", "-demuxers"],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        listing = ""
    _, _, table = listing.partition("--")
    names: list[str] = []
    for line in table.splitlines():
        fields = line.split()
        if len(fields) >= 2 and "D" in fields[0]:
            names += [n for n in fields[1].split(",") if n not in REFERENCING_DEMUXERS]
    return ",".join(dict.fromkeys(names))


class VideoError(Exception):
    """A video that cannot be used; ``reason`` is the ledger reason."""

    def __init__(self, reason: str, detail: str = ""):
        self.reason, self.detail = reason, detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


@dataclass(frozen=True)
class VideoInfo:
    """What the sampler and the ledger need to know about one video stream."""

    stream_index: int  # absolute index of the chosen video stream in the container
    duration: float  # seconds, of the container (what VideoLLaMA3's loader uses)
    stream_duration: float  # seconds, of the video stream (predicts the 1-fps frame count)
    start_time: float  # of the video stream
    fps: float  # average frame rate
    width: int  # as displayed, after rotation
    height: int
    rotation: int  # display rotation, degrees counter-clockwise (0, 90, 180, 270)
    vfr: bool  # nominal and average frame rates disagree
    codec: str
    nb_frames: int | None

    def to_dict(self) -> dict:
        return asdict(self)


def _rate(text: str | None) -> float:
    try:
        r = Fraction(text or "0/1")
    except (ValueError, ZeroDivisionError):
        return 0.0
    return float(r)


def _rotation(stream: dict) -> int:
    """The display rotation in degrees, counter-clockwise as ffprobe reports it (0/90/180/270);
    ffmpeg's autorotate applies it when decoding, so frames come out upright."""
    angle = None
    for side in stream.get("side_data_list") or []:
        if "rotation" in side:
            angle = float(side["rotation"])
    if angle is None and "rotate" in (stream.get("tags") or {}):
        angle = -float(stream["tags"]["rotate"])
    if angle is None or not math.isfinite(angle):
        return 0
    return round(angle / 90.0) % 4 * 90


def _float(value) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def choose_stream(streams: list[dict]) -> dict | None:
    """The video stream ffmpeg itself would pick: the largest picture, cover art excluded."""
    video = [
        s
        for s in streams
        if s.get("codec_type") == "video" and not (s.get("disposition") or {}).get("attached_pic")
    ]
    if not video:
        return None
    return max(video, key=lambda s: int(s.get("width") or 0) * int(s.get("height") or 0))


def _ffprobe(path: Path) -> dict:
    """ffprobe's JSON for ``path``, killed after :data:`PROBE_TIMEOUT_S` (ffmpeg-python's
    ``probe`` has no time limit: its keyword arguments become ffprobe options), with the
    demuxers limited to :func:`format_whitelist`."""
    import json

    import ffmpeg

    cmd = ["ffprobe", "-v", "error", "-show_format", "-show_streams", "-of", "json"]
    cmd += ["-format_whitelist", format_whitelist(), str(path)]
    proc = subprocess.run(
        cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=PROBE_TIMEOUT_S
    )
    if proc.returncode != 0:
        raise ffmpeg.Error("ffprobe", proc.stdout, proc.stderr)
    return json.loads(proc.stdout.decode("utf-8"))


def probe_video(path: str | Path) -> VideoInfo:
    """Probe ``path``; raise :class:`VideoError` naming the ledger reason when it is unusable."""
    import ffmpeg

    path = Path(path)
    if not path.is_file():
        raise VideoError("missing_video", str(path))
    try:
        meta = _ffprobe(path)
    except ffmpeg.Error as e:
        text = (e.stderr or b"").decode(errors="replace").strip()
        refused = re.search(r"\[(\w+) @ [^\]]*\] Format not on whitelist", text)
        if refused:  # a playlist or manifest: what it names is never opened
            detail = f"a {refused.group(1)} file, naming other files or addresses: not opened"
        else:
            detail = " ".join(text.splitlines()[-1:])
        raise VideoError("corrupt_container", detail[:300]) from None
    except Exception as e:  # a hung probe (TimeoutExpired) or unreadable output
        raise VideoError("corrupt_container", f"{type(e).__name__}: {e}"[:300]) from None
    stream = choose_stream(meta.get("streams") or [])
    if stream is None:
        raise VideoError("no_video_stream", "the container has no video stream")
    fmt = meta.get("format") or {}
    duration = _float(fmt.get("duration")) or _float(stream.get("duration"))
    if not duration or duration <= 0:
        raise VideoError("zero_duration", f"duration {fmt.get('duration')!r}")
    width, height = int(stream.get("width") or 0), int(stream.get("height") or 0)
    if width <= 0 or height <= 0:
        raise VideoError("corrupt_container", f"video stream has size {width}x{height}")
    rotation = _rotation(stream)
    if rotation in (90, 270):
        width, height = height, width
    avg, nominal = _rate(stream.get("avg_frame_rate")), _rate(stream.get("r_frame_rate"))
    nb = stream.get("nb_frames")
    return VideoInfo(
        stream_index=int(stream["index"]),
        duration=duration,
        stream_duration=_float(stream.get("duration")) or duration,
        start_time=_float(stream.get("start_time")) or 0.0,
        fps=avg or nominal,
        width=width,
        height=height,
        rotation=rotation,
        vfr=bool(avg and nominal and abs(avg - nominal) > 0.01 * nominal),
        codec=str(stream.get("codec_name") or ""),
        nb_frames=int(nb) if nb and str(nb).isdigit() else None,
    )
