"""A video sample's MP4 gives VideoLLaMA3's ``load_video`` (its ffmpeg path, replicated in
``tests/export/trainers.py``) back every frame once, in order, stamped from the first frame, for
any number of frames, any first-frame time and frame step, read whole or trimmed as a streaming
record trims it; the same frames give the same bytes; frames of two sizes are refused."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
from PIL import Image

from export.mux import frames_to_mp4
from export.records import Skip
from tests.export.trainers import ffmpeg_rgb, load_video, packets


def _frames(folder, n: int, size=(64, 48)) -> list:
    paths = []
    for i in range(n):
        rgb = np.random.default_rng(i).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format="JPEG", quality=90)
        paths.append(folder / f"{i:05d}.jpg")
        paths[-1].write_bytes(buf.getvalue())
    return paths


def check(tmp_path, n: int, first: float, step: float) -> None:
    frames = _frames(tmp_path, n)
    ts = [round(first + k * step, 3) for k in range(n)]
    out = tmp_path / "v.mp4"
    frames_to_mp4(frames, ts, out)
    want = [t - ts[0] for t in ts]
    for span in ((None, None), (0.0, want[-1] + step), (0.0, want[-1] + step / 3)):
        got, stamps = load_video(out, *span, fps=1 / step)
        assert len(got) == n and stamps == pytest.approx(want, abs=1e-6), (span, stamps)
    jpegs = [f.read_bytes() for f in frames]
    assert np.array_equal(got.reshape(n, -1), ffmpeg_rgb(jpegs))
    assert packets(out) == b"".join(jpegs)


@pytest.mark.parametrize(("n", "first", "step"), [(3, 0.6, 1.0), (4, 62.0, 0.5)])
def test_load_video_gives_back_every_frame(tmp_path, n, first, step):
    check(tmp_path, n, first, step)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("n", "first", "step"),
    [  # one frame has no step of its own: it lasts one second, the 1-fps frame step
        (n, first, step)
        for n, first, step in itertools.product(
            (1, 2, 3, 4, 7, 120), (0.0, 0.5, 0.333, 62.0), (1.0, 0.5, 2.0)
        )
        if n > 1 or step == 1.0
    ],
)
def test_load_video_gives_back_every_frame_on_a_grid_of_cases(tmp_path, n, first, step):
    check(tmp_path, n, first, step)


def test_same_frames_same_bytes_and_one_size(tmp_path):
    frames = _frames(tmp_path, 3)
    frames_to_mp4(frames, [0.0, 1.0, 2.0], tmp_path / "a.mp4")
    frames_to_mp4(frames, [0.0, 1.0, 2.0], tmp_path / "b.mp4")
    assert (tmp_path / "a.mp4").read_bytes() == (tmp_path / "b.mp4").read_bytes()
    (tmp_path / "big").mkdir()
    other = _frames(tmp_path / "big", 1, size=(96, 48))
    with pytest.raises(Skip, match="frame_sizes_differ"):
        frames_to_mp4([frames[0], other[0]], [0.0, 1.0], tmp_path / "c.mp4")
    png = tmp_path / "00009.jpg"
    Image.new("RGB", (64, 48)).save(png, format="PNG")
    with pytest.raises(Skip, match="frame_not_jpeg"):
        frames_to_mp4([frames[0], png], [0.0, 1.0], tmp_path / "d.mp4")
