"""How the trainers open what an export wrote, as their code does it (read from their
repositories; nothing here is imported from them, which need CUDA-era pins):

- VideoLLaMA3 (``videollama3/train.py`` ``LazySupervisedDataset``): the annotation file through
  ``datasets.load_dataset("json")``, paths joined to ``--data_folder``; a video file through
  ``mm_utils.load_video``: ffprobe's stream ``start_time`` and format ``duration``, ``-ss/-t``
  for a streaming record's span, ffmpeg's ``fps`` filter (``round=down``) to raw RGB,
  timestamps ``start + k / fps``, at most ``max_frames`` kept by ``linspace``.
- LLaVA (``llava/train/train.py``): ``json.load`` of the list, ``image`` joined to
  ``--image_folder``; LLaVA-NeXT reads ``video`` under ``--video_folder`` with decord
  (``llava/utils.py`` ``process_video_with_decord``).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np


def load_video(
    path: Path,
    start_time: float | None = None,
    end_time: float | None = None,
    fps: float = 1,
    max_frames: int = 180,
) -> tuple[np.ndarray, list[float]]:
    """VideoLLaMA3's ``load_video`` (ffmpeg path, ``--fps 1 --max_frames 180`` as in its
    stage scripts): frames ``[T, H, W, 3]`` and their timestamps."""
    import ffmpeg

    probe = ffmpeg.probe(str(path))
    duration = float(probe["format"]["duration"])
    stream = next(s for s in probe["streams"] if s["codec_type"] == "video")
    w, h = int(stream["width"]), int(stream["height"])
    start = float(stream["start_time"])
    if start_time is not None:
        new = max(start, start_time)
        duration -= new - start_time
        start = new
    if end_time is not None:
        duration = min(duration, end_time - start)
    trim = {"ss": start, "t": duration} if start_time is not None or end_time is not None else {}
    out, _ = (
        ffmpeg.input(str(path), **trim)
        .filter("fps", fps=fps, round="down")
        .output("pipe:", format="rawvideo", pix_fmt="rgb24")
        .run(capture_stdout=True, quiet=True)
    )
    frames = np.frombuffer(out, np.uint8).reshape(-1, h, w, 3)
    stamps = np.arange(start, start + duration + 1 / fps, 1 / fps)[: len(frames)].tolist()
    if len(frames) > max_frames:
        keep = np.linspace(0, len(frames) - 1, max_frames, dtype=int)
        frames, stamps = frames[keep], [stamps[i] for i in keep]
    return frames, stamps


def ffmpeg_rgb(jpegs: list[bytes]) -> np.ndarray:
    """JPEGs decoded by ffmpeg, as the loader's pipe gives them: ``[T, H*W*3]``."""
    proc = subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "image2pipe", "-c:v", "mjpeg", "-i", "pipe:",
         "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:"],
        input=b"".join(jpegs), capture_output=True, check=True,
    )  # fmt: skip
    return np.frombuffer(proc.stdout, np.uint8).reshape(len(jpegs), -1)


def packets(path: Path) -> bytes:
    """The video track's packets, stream-copied out: the JPEG bytes it holds, concatenated."""
    proc = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-c", "copy", "-f", "image2pipe", "pipe:"],
        capture_output=True,
        check=True,
    )
    return proc.stdout


def llava_next_video(path: Path, video_fps: int = 1) -> tuple[np.ndarray, list[float]]:
    """LLaVA-NeXT's ``process_video_with_decord`` (``frames_upbound`` 0): every
    ``round(avg_fps / video_fps)``-th frame and its time; decord as that code opens it."""
    from decord import VideoReader, cpu

    vr = VideoReader(str(path), ctx=cpu(0), num_threads=1)
    step = round(vr.get_avg_fps() / video_fps)
    idx = list(range(0, len(vr), step))
    return vr.get_batch(idx).asnumpy(), [i / step for i in idx]
