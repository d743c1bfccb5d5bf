"""Video frames: ours vs VideoLLaMA3's reference loader, in one run (targets: a >= 1.0x, b >= 3x).

a. 1-fps sampling of a whole video, at most 180 frames. Reference (VideoLLaMA3's ``load_video``):
   ``ffmpeg.input(path)`` -> ``fps`` filter ``round="down"`` -> raw rgb24 read whole into memory
   (``ffmpeg.run(capture_stdout=True)``) -> ``np.frombuffer(...).reshape`` ->
   ``np.linspace(0, n - 1, 180, dtype=int)``; the selected frames are then JPEG-encoded with
   :func:`video_prep.frames.encode_jpeg` at the same quality, so both give the same thing. Ours:
   :func:`video_prep.frames.sample_video`, which streams the pipe and encodes only the frames
   it can select. Both include the probe (the reference calls ``ffmpeg.probe`` too).
b. Frames of 10 clips of one long video. Reference: ``load_video(start_time, end_time)`` per
   clip, i.e. 10 probes + decodes with input seeking (``-ss START -t LENGTH`` before ``-i``);
   also shown, its ``precise_time=True`` form (the same options after the input: output
   seeking, which decodes from the start every time). Ours: ``video_prep.prepare._decode``, one
   :func:`video_prep.frames.decode_grid` pass keeping the frames inside the clip spans, with one
   decoder thread (our default) and with ffmpeg's default (a thread per core). Clip
   starts are whole seconds so all three land on the same 1-fps grid and can be compared; with
   a fractional start the per-clip grid of input seeking starts at the clip's start, ours is
   the whole video's grid (same count, other frames).

Videos: the three real sample videos and a long ffmpeg test pattern (10 min, 640x360, 25 fps,
generated first, not timed). Every measurement runs in a fresh Python process, so its peak RSS
(``VmHWM``) is its own: where the frames are held. ffmpeg runs the same decode in both and
is not measured (Linux reports a child's peak as at least its parent's RSS at fork time). Rounds
rotate which goes first. Prints mean wall and CPU seconds (the process + ffmpeg + ffprobe), the
ratio (reference / ours), the JPEG encodes made and whether the JPEG bytes are equal, then one
JSON line (with the load average, since the box may be shared).

    .venv/bin/python bench/bench_video.py [--rounds 3] [--minutes 10] [--clips 10] [--parts a,b]
        [--clip-video PATH] [--gap 5] [--videos bikes,pattern]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from video_prep.frames import encode_jpeg
from video_prep.sample_videos import pattern_video, real_videos

MAX_FRAMES = 180
QUALITY = 90
FPS = 1.0


def _digests(frames: list[bytes]) -> list[str]:
    return [hashlib.sha256(f).hexdigest()[:16] for f in frames]


ENCODES = [0]


def _count_encodes() -> None:
    """Count the JPEG encodes :mod:`video_prep.frames` makes (it looks the function up by name
    at each call; one more Python call per frame, a fraction of a microsecond)."""
    import video_prep.frames as vf

    encode = vf.encode_jpeg

    def counted(rgb: bytes, size: tuple[int, int], quality: int) -> bytes:
        ENCODES[0] += 1
        return encode(rgb, size, quality)

    vf.encode_jpeg = counted


# -- the measured calls (each runs in its own worker process) -----------------------------------


def sample_ours(path: str) -> dict:
    from video_prep.frames import sample_video
    from video_prep.probe import probe_video

    _count_encodes()
    info = probe_video(path)
    s = sample_video(path, info, fps=FPS, max_frames=MAX_FRAMES, quality=QUALITY)
    return {
        "frames": _digests(s.frames),
        "timestamps": s.timestamps,
        "grid_frames": s.grid_frames,
        "passes": s.passes,
    }


def _reference_load(path: str, start: float | None, end: float | None, precise: bool) -> tuple:
    """VideoLLaMA3's ``load_video`` (no resize), its kept frames then JPEG-encoded: the JPEGs,
    their timestamps and the number of 1-fps frames ffmpeg gave (all held raw in memory)."""
    import ffmpeg

    probe = ffmpeg.probe(path)
    duration = float(probe["format"]["duration"])
    vs = next(s for s in probe["streams"] if s["codec_type"] == "video")
    w, h = int(vs["width"]), int(vs["height"])
    kwargs, input_kwargs, output_kwargs = {}, {}, {}
    if start is not None:
        new_start = max(float(vs["start_time"]), start)
        duration -= new_start - start
        start = new_start
        duration = min(duration, end - start)
        kwargs = {"ss": start, "t": duration}
    else:
        start = float(vs["start_time"])
    (output_kwargs if precise else input_kwargs).update(kwargs)
    stream = ffmpeg.input(path, **input_kwargs)
    stream = ffmpeg.filter(stream, "fps", fps=FPS, round="down")
    stream = ffmpeg.output(stream, "pipe:", format="rawvideo", pix_fmt="rgb24", **output_kwargs)
    out, _ = ffmpeg.run(stream, capture_stdout=True, quiet=True)
    frames = np.frombuffer(out, np.uint8).reshape([-1, h, w, 3])
    timestamps = np.arange(start, start + duration + 1 / FPS, 1 / FPS)[: len(frames)]
    if len(frames) > MAX_FRAMES:
        indices = np.linspace(0, len(frames) - 1, MAX_FRAMES, dtype=int)
        frames, timestamps = frames[indices], timestamps[indices]
    jpegs = [encode_jpeg(f.tobytes(), (w, h), QUALITY) for f in frames]
    ENCODES[0] += len(jpegs)
    return jpegs, [round(float(t), 6) for t in timestamps], len(out) // (w * h * 3)


def sample_reference(path: str) -> dict:
    jpegs, ts, n = _reference_load(path, None, None, precise=False)
    return {"frames": _digests(jpegs), "timestamps": ts, "grid_frames": n, "passes": 1}


def clips_ours(path: str, spans: list[list[float]], threads: int = 1) -> dict:
    from video_prep.clips import Clip
    from video_prep.config import FramesConfig, VideoConfig
    from video_prep.prepare import _decode
    from video_prep.probe import probe_video

    _count_encodes()
    info = probe_video(path)
    frames_cfg = FramesConfig(
        fps=FPS, max_frames=MAX_FRAMES, max_side=None, jpeg_quality=QUALITY, decode_threads=threads
    )
    cfg = VideoConfig(frames=frames_cfg)
    clips = [Clip(i, s, e) for i, (s, e) in enumerate(spans)]
    frames, n, _, _ = _decode(path, info, clips, cfg)
    return {
        "clips": [_digests(frames[c.index].frames) for c in clips],
        "timestamps": [frames[c.index].timestamps for c in clips],
        "grid_frames": n,
    }


def clips_reference(path: str, spans: list[list[float]], precise: bool) -> dict:
    out, ts, n = [], [], 0
    for s, e in spans:
        jpegs, t, k = _reference_load(path, s, e, precise=precise)
        out.append(_digests(jpegs))
        ts.append(t)
        n += k
    return {"clips": out, "timestamps": ts, "grid_frames": n}


WORKERS = {
    "sample_ours": lambda a: sample_ours(a["path"]),
    "sample_reference": lambda a: sample_reference(a["path"]),
    "clips_ours": lambda a: clips_ours(a["path"], a["spans"]),
    "clips_ours_default_threads": lambda a: clips_ours(a["path"], a["spans"], threads=0),
    "clips_input_seek": lambda a: clips_reference(a["path"], a["spans"], precise=False),
    "clips_output_seek": lambda a: clips_reference(a["path"], a["spans"], precise=True),
}


def vm_kb(field: str) -> int:
    """This process's ``/proc/self/status`` figure in kB. Its peak is ``VmHWM``, not
    ``ru_maxrss``: Linux carries the pre-exec high-water mark (the forking parent's RSS) into
    the latter, so a small worker forked from a big bench would report the bench's size."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} is not in /proc/self/status")


def worker(spec: dict) -> None:
    """One measurement in this (fresh) process; prints its result as JSON."""
    import ffmpeg  # noqa: F401  (imports are not what is measured)
    import PIL.Image  # noqa: F401

    import video_prep.prepare  # noqa: F401

    me, kids = resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN
    rss0 = vm_kb("VmRSS")
    cpu0 = sum(resource.getrusage(r).ru_utime + resource.getrusage(r).ru_stime for r in (me, kids))
    t0 = time.perf_counter()
    res = WORKERS[spec["kind"]](spec)
    wall = time.perf_counter() - t0
    cpu = sum(resource.getrusage(r).ru_utime + resource.getrusage(r).ru_stime for r in (me, kids))
    res.update(
        jpeg_encodes=ENCODES[0],
        wall_s=wall,
        cpu_s=cpu - cpu0,
        rss_before_mb=rss0 / 1024,
        rss_peak_mb=vm_kb("VmHWM") / 1024,
    )
    print(json.dumps(res))


# -- the driver ----------------------------------------------------------------------------------


def measure(spec: dict) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(spec)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"worker {spec['kind']} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def rounds(kinds: list[str], spec: dict, n: int) -> dict[str, list[dict]]:
    """``n`` rounds of every kind, the order rotating each round."""
    runs: dict[str, list[dict]] = {k: [] for k in kinds}
    for r in range(n):
        for k in kinds[r % len(kinds) :] + kinds[: r % len(kinds)]:
            runs[k].append(measure({**spec, "kind": k}))
    return runs


def _mean(runs: list[dict], key: str) -> float:
    return float(np.mean([r[key] for r in runs]))


def _summary(runs: list[dict]) -> dict:
    return {
        "wall_s": round(_mean(runs, "wall_s"), 3),
        "cpu_s": round(_mean(runs, "cpu_s"), 3),
        "rss_before_mb": round(_mean(runs, "rss_before_mb"), 1),
        "rss_peak_mb": round(max(r["rss_peak_mb"] for r in runs), 1),
        "jpeg_encodes": runs[0]["jpeg_encodes"],
    }


def bench_sampling(videos: dict[str, Path], n_rounds: int) -> dict:
    results = {}
    print(f"a. 1-fps sampling, <= {MAX_FRAMES} frames, JPEG q{QUALITY} ({n_rounds} rounds)")
    print(
        f"  {'video':<14}{'grid':>5}{'kept':>5}{'ref s':>8}{'ours s':>8}{'ratio':>7}"
        f"{'CPU ratio':>10}{'ref RSS':>9}{'ours RSS':>9}{'ours JPEGs':>11}  equal"
    )
    for name, path in videos.items():
        runs = rounds(["sample_reference", "sample_ours"], {"path": str(path)}, n_rounds)
        ref, ours = runs["sample_reference"], runs["sample_ours"]
        equal = all(r["frames"] == ref[0]["frames"] for r in ref + ours) and all(
            r["timestamps"] == ref[0]["timestamps"] for r in ref + ours
        )
        assert equal, f"{name}: ours and the reference differ"
        assert ours[0]["grid_frames"] == ref[0]["grid_frames"], name
        row = {
            "grid_frames": ref[0]["grid_frames"],
            "kept_frames": len(ref[0]["frames"]),
            "second_decodes": sum(r["passes"] == 2 for r in ours),
            "reference": _summary(ref),
            "ours": _summary(ours),
            "ratio": round(_mean(ref, "wall_s") / _mean(ours, "wall_s"), 3),
            "cpu_ratio": round(_mean(ref, "cpu_s") / _mean(ours, "cpu_s"), 3),
            "equal": equal,
        }
        results[name] = row
        r, o = row["reference"], row["ours"]
        print(
            f"  {name:<14}{row['grid_frames']:>5}{row['kept_frames']:>5}{r['wall_s']:>8.3f}"
            f"{o['wall_s']:>8.3f}{row['ratio']:>6.2f}x{row['cpu_ratio']:>9.2f}x"
            f"{r['rss_peak_mb']:>6.0f} MB{o['rss_peak_mb']:>6.0f} MB{o['jpeg_encodes']:>11}"
            f"  {'yes' if equal else 'NO'}"
        )
    return results


def bench_clips(path: Path, duration: float, n_clips: int, n_rounds: int, gap: int = 5) -> dict:
    step = duration / n_clips
    length = min(55, int(step) - gap)  # whole seconds, so every approach lands on one grid
    lead = min(3, gap)
    if length < 1:
        raise SystemExit(f"{n_clips} clips with {gap}-s gaps do not fit in {duration:.1f} s")
    spans = [
        [float(int(i * step) + lead), float(int(i * step) + lead + length)] for i in range(n_clips)
    ]
    kinds = ["clips_input_seek", "clips_output_seek", "clips_ours_default_threads", "clips_ours"]
    runs = rounds(kinds, {"path": str(path), "spans": spans}, n_rounds)
    ours = runs["clips_ours"]
    print(
        f"b. {n_clips} clips of {length} s from {path.name} ({duration:.0f} s): "
        f"spans {spans[0]}..{spans[-1]} ({n_rounds} rounds)"
    )
    print(
        f"  {'approach':<40}{'frames':>7}{'grid':>5}{'JPEGs':>6}{'wall s':>8}{'CPU s':>7}"
        f"{'ratio':>7}{'CPU ratio':>10}{'RSS':>8}  equal to ours"
    )
    results: dict = {"spans": spans}
    labels = {
        "clips_input_seek": "reference, -ss/-t before -i (default)",
        "clips_output_seek": "reference, precise_time (after -i)",
        "clips_ours_default_threads": "ours, ffmpeg's default threads",
        "clips_ours": "ours, one decode_grid pass",
    }
    for k in kinds:
        rs = runs[k]
        clips = rs[0]["clips"]
        same = sum(a == b for a, b in zip(clips, ours[0]["clips"], strict=True))
        frames_equal = sum(
            x == y
            for a, b in zip(clips, ours[0]["clips"], strict=True)
            for x, y in zip(a, b, strict=False)
        )
        row = {
            **_summary(rs),
            "frames": sum(len(c) for c in clips),
            "grid_frames_decoded": rs[0]["grid_frames"],
            "ratio": round(_mean(rs, "wall_s") / _mean(ours, "wall_s"), 3),
            "cpu_ratio": round(_mean(rs, "cpu_s") / _mean(ours, "cpu_s"), 3),
            "clips_equal": same,
            "frames_equal": frames_equal,
            "timestamps_equal": rs[0]["timestamps"] == ours[0]["timestamps"],
            "stable": all(r["clips"] == clips for r in rs),
        }
        results[k] = row
        ts = "same timestamps" if row["timestamps_equal"] else "other timestamps"
        print(
            f"  {labels[k]:<40}{row['frames']:>7}{row['grid_frames_decoded']:>5}"
            f"{row['jpeg_encodes']:>6}{row['wall_s']:>8.3f}{row['cpu_s']:>7.3f}{row['ratio']:>6.2f}x"
            f"{row['cpu_ratio']:>9.2f}x{row['rss_peak_mb']:>5.0f} MB  {same}/{n_clips} clips, "
            f"{frames_equal} frames, {ts}"
        )
        assert row["stable"], f"{k} gave different frames in different rounds"
    return results


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--minutes", type=float, default=10.0, help="length of the test pattern")
    ap.add_argument("--clips", type=int, default=10)
    ap.add_argument("--parts", default="a,b", help="which parts to run: a (sampling), b (clips)")
    ap.add_argument("--clip-video", help="part b on this video instead of the test pattern")
    ap.add_argument("--gap", type=int, default=5, help="seconds between clips in part b")
    ap.add_argument(
        "--videos", help="part a on these only: comma-separated real video names or 'pattern'"
    )
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(json.loads(args.worker))
        return {}
    load0 = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory() as tmp:
        seconds = args.minutes * 60
        parts = set(args.parts.split(","))
        long = Path(tmp) / "pattern.mp4"
        if "a" in parts or not args.clip_video:
            t0 = time.perf_counter()
            pattern_video(long, seconds, rate=25, size="640x360")
            gen_s = time.perf_counter() - t0
            print(
                f"generated {long.name}: {seconds:.0f} s, 640x360, 25 fps in {gen_s:.1f} s "
                "(not timed)"
            )
        videos = {**real_videos(), f"pattern_{args.minutes:g}min": long}
        if args.videos:  # part a on these only ("pattern" names the test pattern)
            wanted = set(args.videos.split(","))
            if "pattern" in wanted:
                wanted.add(f"pattern_{args.minutes:g}min")
            videos = {k: v for k, v in videos.items() if k in wanted}
        sampling = bench_sampling(videos, args.rounds) if "a" in parts else {}
        if "b" in parts and args.clip_video:
            from video_prep.probe import probe_video

            clip_video = Path(args.clip_video)
            dur = probe_video(clip_video).duration
            clips = bench_clips(clip_video, dur, args.clips, args.rounds, args.gap)
        elif "b" in parts:
            clips = bench_clips(long, seconds, args.clips, args.rounds, args.gap)
        else:
            clips = {}
    res = {
        "bench": "video",
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "loadavg_before": load0,
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "rounds": args.rounds,
        "sampling": sampling,
        "clips": clips,
    }
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
