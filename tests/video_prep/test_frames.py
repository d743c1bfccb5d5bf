"""1-fps sampling equals an independent reference that calls the ffmpeg CLI with
VideoLLaMA3's rules: fps filter rounding down, k/fps timestamps, linspace subsample."""

from __future__ import annotations

import dataclasses
import functools
import io
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from video_prep.frames import encode_jpeg, ffmpeg_command, sample_video, scaled_size
from video_prep.probe import VideoError, probe_video
from video_prep.sample_videos import pattern_video, real_videos, rotated


@functools.lru_cache(maxsize=8)  # decodes reused by the tests below (~200 MB at most)
def reference_frames(path: Path, fps: float, size: tuple[int, int] | None) -> np.ndarray:
    """The ffmpeg CLI, straight to raw RGB, all frames in memory (read-only)."""
    info = probe_video(path)
    w, h = size or (info.width, info.height)
    vf = f"fps=fps={fps}:round=down" + (f",scale={w}:{h}" if size else "")
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-vf", vf]
    raw = subprocess.run(
        [*cmd, "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], capture_output=True, check=True
    ).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, h, w, 3)


def reference(path: Path, fps: float, max_frames: int, size: tuple[int, int] | None = None):
    """The ffmpeg CLI's frames (:func:`reference_frames`), then VideoLLaMA3's subsample."""
    frames = reference_frames(path, fps, size)
    n = len(frames)
    idx = list(range(n)) if n <= max_frames else np.linspace(0, n - 1, max_frames, dtype=int)
    return frames, [int(i) for i in idx], [i / fps for i in idx]


def assert_same(path: Path, fps=1.0, max_frames=180, max_side=None, info=None):
    info = info or probe_video(path)
    got = sample_video(path, info, fps=fps, max_frames=max_frames, max_side=max_side)
    size = scaled_size(info.width, info.height, max_side) if max_side else None
    frames, idx, ts = reference(path, fps, max_frames, size)
    assert got.grid_frames == len(frames)
    assert got.indices == idx
    assert got.timestamps == pytest.approx(ts)
    # same pixels: identical raw frames give identical bytes under the same JPEG encoder
    wh = size or (info.width, info.height)
    assert got.frames == [encode_jpeg(frames[i].tobytes(), wh, 90) for i in idx]
    return got


REAL = real_videos()


#: ffmpeg's fps filter gives floor(duration) frames at 1 fps on these files
KNOWN_COUNTS = {"bigbuckbunny": 5, "bikes": 10, "vtest": 79}


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_videos_match_the_reference(name):
    got = assert_same(REAL[name])
    assert got.passes == 1
    assert got.timestamps[0] == 0.0
    assert got.grid_frames == KNOWN_COUNTS[name]


@pytest.mark.parametrize("name", sorted(REAL))
def test_subsampling_keeps_first_and_last(name):
    got = assert_same(REAL[name], max_frames=4)
    assert len(got.frames) == 4
    assert got.indices[0] == 0 and got.indices[-1] == got.grid_frames - 1


def test_long_video_is_capped_at_180_uniform_frames(videos):
    got = assert_same(videos / "pattern_6min.mp4")
    assert got.grid_frames == 360 and len(got.frames) == 180
    assert got.timestamps[:3] == [0.0, 2.0, 4.0] and got.timestamps[-1] == 359.0


def test_max_side_scales_like_ffmpeg(tmp_path):
    path = REAL.get("bigbuckbunny") or pattern_video(tmp_path / "t.mp4", 4, size="640x360")
    got = assert_same(path, max_side=320)
    assert got.size == scaled_size(*Image.open(io.BytesIO(got.frames[0])).size, 320)
    assert max(Image.open(io.BytesIO(got.frames[0])).size) == 320


def test_variable_frame_rate(videos):
    info = probe_video(videos / "vfr.mp4")
    assert info.vfr
    got = assert_same(videos / "vfr.mp4")
    assert got.timestamps == [float(i) for i in range(got.grid_frames)]


def test_rotated_video_comes_out_upright(tmp_path):
    upright = pattern_video(tmp_path / "upright.mp4", 3)
    turned = rotated(upright, tmp_path / "rotated.mp4", 90)
    info = probe_video(turned)
    assert info.rotation in (90, 270) and (info.width, info.height) == (120, 160)
    got = assert_same(turned)
    plain = sample_video(upright, probe_video(upright))
    a = np.asarray(Image.open(io.BytesIO(got.frames[1])), dtype=int)
    b = np.asarray(Image.open(io.BytesIO(plain.frames[1])), dtype=int)
    turned_b = min((np.rot90(b, k) for k in (1, 3)), key=lambda x: np.abs(x - a).mean())
    assert np.abs(turned_b - a).mean() < 3  # the same picture, a quarter turn (JPEG noise only)


def test_sub_second_video_gives_its_first_frame(videos):
    """The fps filter gives no frame for a 0.5 s video (VideoLLaMA3's loader gets none); we
    still give one: the first, at 0 s."""
    path = videos / "short.mp4"
    assert len(reference(path, 1.0, 180)[0]) == 0
    info = probe_video(path)
    got = sample_video(path, info)
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-frames:v", "1"]
    raw = subprocess.run(
        [*cmd, "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], capture_output=True, check=True
    ).stdout
    assert got.timestamps == [0.0]
    assert got.frames == [encode_jpeg(raw, (info.width, info.height), 90)]


def test_a_missed_count_estimate_decodes_again_and_still_matches(videos):
    path = videos / "pattern_6min.mp4"
    info = dataclasses.replace(probe_video(path), stream_duration=900.0)  # a lying header
    got = assert_same(path, max_frames=50, info=info)
    assert got.passes == 2


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("audio_only.mp4", "no_video_stream"),
        ("random_bytes.mp4", "corrupt_container"),
        ("picture.mp4", "zero_duration"),
        ("truncated.mp4", "corrupt_container"),
        ("nothing_here.mp4", "missing_video"),
    ],
)
def test_bad_files_name_their_reason(videos, name, reason):
    with pytest.raises(VideoError) as e:
        probe_video(videos / name)
    assert e.value.reason == reason


def test_decode_deadline(videos):
    path = videos / "pattern_6min.mp4"
    with pytest.raises(VideoError) as e:
        sample_video(path, probe_video(path), timeout_s=0.05)
    assert e.value.reason == "decode_timeout"


@pytest.mark.parametrize("threads", [1, 0, 2])
def test_decoder_threads_go_before_the_input_and_change_no_pixel(threads):
    """One decoder thread by default (a video per reserved CPU); the reference above runs
    ffmpeg's own default (a thread per core), so equal bytes mean the count changes nothing."""
    path = REAL["bikes"]
    info = probe_video(path)
    cmd = ffmpeg_command(path, info, 1.0, (info.width, info.height), threads)
    i = cmd.index("-i")
    assert cmd[i - 2 : i] == ["-threads", str(threads)]
    got = sample_video(path, info, max_frames=4, threads=threads)
    frames, idx, _ = reference(path, 1.0, 4)
    size = (info.width, info.height)
    assert got.frames == [encode_jpeg(frames[k].tobytes(), size, 90) for k in idx]


def test_a_clip_between_grid_frames_gets_the_frame_at_its_middle(tmp_path):
    """[2.2, 2.8] holds no 1-fps grid frame. Its frame is the one shown at 2.5 s, stamped
    2.5 (0.3 s into the clip), never the 2.0 s frame from before the clip (-0.2 s)."""
    from video_prep.clips import Clip
    from video_prep.config import VideoConfig
    from video_prep.prepare import OFF_GRID, _decode
    from video_prep.samples import caption_record

    path = pattern_video(tmp_path / "p.mp4", 4.0, rate=10)
    info = probe_video(path)
    clips = [Clip(0, 0.0, 1.5, [_Seg(0.0, 1.5, "a")]), Clip(1, 2.2, 2.8, [_Seg(2.2, 2.8, "b")])]
    frames, _, passes, _ = _decode(str(path), info, clips, VideoConfig())
    assert frames[0].timestamps == [0.0, 1.0]
    assert frames[1].timestamps == [2.5] and frames[1].indices == [OFF_GRID]
    assert passes == 2  # the grid, then the one frame at 2.5 s
    # the frame shown at 2.5 s is the 26th of the 10-fps stream
    w, h = info.width, info.height
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-f", "rawvideo"]
    raw = subprocess.run([*cmd, "-pix_fmt", "rgb24", "-"], capture_output=True, check=True)
    stream = np.frombuffer(raw.stdout, np.uint8).reshape(-1, h, w, 3).astype(int)
    got = np.asarray(Image.open(io.BytesIO(frames[1].frames[0])), dtype=int)
    off = {i: np.abs(stream[i] - got).mean() for i in (20, 22, 25, 28)}
    assert min(off, key=off.get) == 25  # that frame, not a neighbour (JPEG noise aside)
    rec = caption_record("k", clips[1], frames[1], "v", ["Describe."], 0, timestamps=True)
    assert rec["timestamps"] == [0.3]


def test_a_record_refuses_a_frame_from_before_its_clip():
    from video_prep.clips import Clip
    from video_prep.samples import ClipFrames, caption_record

    clip = Clip(0, 150.2, 150.8, [_Seg(150.2, 150.8, "b")])
    before = ClipFrames([150], [b"jpeg"], [150.0], (8, 8))
    with pytest.raises(ValueError, match="before the clip's start"):
        caption_record("k", clip, before, "v", ["Describe."], 0)


@dataclasses.dataclass
class _Seg:
    start: float
    end: float
    text: str


def test_a_stream_starting_at_2_5_s_is_stamped_from_its_first_frame(tmp_path):
    """Our timestamps count from the video stream's first frame, as annotations do; a stream
    that starts at 2.5 s gives exactly the frames and stamps of the same video starting at 0.
    (VideoLLaMA3's loader counts from the stream's start_time instead: docs/VIDEO.md.)"""
    src = ["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i", "testsrc=d=4:r=10:s=160x120"]
    enc = ["-pix_fmt", "yuv420p"]
    plain, offset = tmp_path / "plain.mp4", tmp_path / "offset.mp4"
    subprocess.run([*src, *enc, str(plain)], check=True)
    subprocess.run([*src, "-output_ts_offset", "2.5", *enc, str(offset)], check=True)
    info = probe_video(offset)
    assert info.start_time == 2.5 and info.stream_duration == 4.0
    got, ref = sample_video(offset, info), sample_video(plain, probe_video(plain))
    assert got.timestamps == ref.timestamps == [0.0, 1.0, 2.0, 3.0]
    assert got.frames == ref.frames
