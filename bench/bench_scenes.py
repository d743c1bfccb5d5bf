"""Scene cuts and the raw-video job, side by side with their baselines, in one run.

a. Detector frames/s on each video: ours (:func:`video_prep.scenes.decode_with_cuts`: ffmpeg's
   scene score AND the 1-fps grid, JPEG-encoded, from one decode) against a bare
   ``ffmpeg -threads 1 -i V -vf select='gt(scene,0.3)',metadata=print -f null -`` pass (the scene
   score alone, nothing kept). Frames/s counts the video's own frames (every one is scored).
   With ``--scenedetect-python PY`` (a Python with ``scenedetect`` installed, e.g. a venv of
   its own: ``pip install scenedetect-headless``), PySceneDetect's ``ContentDetector`` runs on
   the same file too, as the alternative we measured before choosing ffmpeg's score. For the
   generated video the planted cuts are compared with the found ones (the largest error, in
   seconds; 0.04 is one frame at 25 fps).
b. The whole raw-video job (``video-raw``: scenes, clip captions by the tiny InternVL on CPU with
   ``--caption-frames`` frames per clip, write) against the caption-bounded job (``video``) on
   the same video, annotated with one caption every ``--caption-every`` seconds: decoded
   frames/s = the video's frames / the job's wall time (Ray started once before both, not
   counted). Also each job's decode stage alone (``scenes`` vs ``prepare``). Target: >= 0.8x.
   The raw job captions inside its partition tasks (transformers on CPU), loading the model
   once per worker process while the first video decodes: what the decode did not cover is
   ``caption_model_s`` (0 on a worker that already holds the model). Ray's workers outlive a
   job, so by default rounds after the first find the model loaded (a build graph's later
   nodes do too); ``--cold`` restarts Ray before every job (not timed) so that each one meets
   fresh workers that import everything and load the model again: the worst case.
   ``--local`` starts no Ray: both jobs run on local worker processes, fresh ones for every
   job, as ``vl3data video-raw`` and ``vl3data video`` do on one machine (cold, like
   ``--cold``, with no Ray to start or stop).
   ``--copies N`` puts N copies of the video in the folder to see a fixed cost amortized.
   ``--server`` captions through an OpenAI-compatible server instead: ``transformers serve``
   holding the tiny model, started (and sent one clip) before the rounds, not timed; it answers
   on the same cores while the job runs. The job then sends its clips from its partition tasks
   and loads no model, and no Ray is started: both jobs run on local worker processes, fresh
   ones for every job, as ``vl3data video-raw`` and ``vl3data video`` do. ``--server-url URL
   --server-model NAME`` uses a server already running instead (``vllm serve``, say).

Videos: ``pattern`` (a generated test pattern, ``--minutes`` long, 320x240 at 25 fps, with a
hard cut between different ffmpeg sources every ``--shot`` seconds: generated first, not timed)
and ``vtest`` (Debian's opencv-doc, 79.5 s, fixed camera). Rounds rotate which side goes first.
Prints one human line per measurement, then one JSON line (with the load average).

    .venv/bin/python bench/bench_scenes.py [--rounds 3] [--minutes 10] [--shot 100]
        [--videos pattern,vtest] [--parts a,b] [--cold | --local | --server]
        [--scenedetect-python /path/to/python]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import ROOT, keep_ray_local, loadavg, median

from video_prep.probe import probe_video
from video_prep.sample_videos import VTEST, cuts_video
from video_prep.scenes import SCENE_THRESHOLD, decode_with_cuts, filter_arg

SCENEDETECT = """
import sys, time
from scenedetect import ContentDetector, SceneManager, open_video
t0 = time.perf_counter()
video = open_video(sys.argv[1])
sm = SceneManager()
sm.add_detector(ContentDetector())
sm.detect_scenes(video)
cuts = [s[0].get_seconds() for s in sm.get_scene_list()][1:]
print(time.perf_counter() - t0, video.frame_number, *cuts)
"""


def frames_of(path: Path) -> int:
    info = probe_video(path)
    return info.nb_frames or round(info.stream_duration * info.fps)


def bare_ffmpeg(path: Path) -> tuple[float, list[float]]:
    with tempfile.TemporaryDirectory() as tmp:
        meta = Path(tmp) / "m.txt"
        vf = f"select='gt(scene,{SCENE_THRESHOLD})',metadata=print:file={filter_arg(meta)}"
        t0 = time.perf_counter()
        cmd = ["ffmpeg", "-nostdin", "-v", "error", "-threads", "1", "-i", str(path)]
        subprocess.run([*cmd, "-vf", vf, "-f", "null", "-"], check=True)
        wall = time.perf_counter() - t0
        text = meta.read_text() if meta.is_file() else ""
    cuts = [
        float(line.rsplit("pts_time:", 1)[1]) for line in text.splitlines() if "pts_time:" in line
    ]
    return wall, cuts


def ours(path: Path) -> tuple[float, list[float]]:
    t0 = time.perf_counter()
    dec = decode_with_cuts(path, probe_video(path), fps=1.0, max_side=448)
    return time.perf_counter() - t0, dec.cuts


def scenedetect(python: str, path: Path) -> tuple[float, list[float]]:
    out = subprocess.run(
        [python, "-c", SCENEDETECT, str(path)], capture_output=True, text=True, check=True
    ).stdout.split()
    return float(out[0]), [float(x) for x in out[2:]]


def max_error(found: list[float], planted: list[float] | None) -> float | None:
    if planted is None:
        return None
    if len(found) != len(planted):
        return float("inf")
    return round(max((abs(a - b) for a, b in zip(found, planted, strict=True)), default=0.0), 4)


def part_a(videos: dict[str, tuple[Path, list[float] | None]], rounds: int, sd: str | None) -> dict:
    res = {}
    for name, (path, planted) in videos.items():
        n = frames_of(path)
        sides = {"ours": ours, "ffmpeg_select": bare_ffmpeg}
        if sd:
            sides["pyscenedetect"] = lambda p, sd=sd: scenedetect(sd, p)
        walls: dict[str, list[float]] = {k: [] for k in sides}
        cuts: dict[str, list[float]] = {}
        for r in range(rounds):
            order = list(sides)[r % len(sides) :] + list(sides)[: r % len(sides)]
            for side in order:
                wall, found = sides[side](path)
                walls[side].append(wall)
                cuts[side] = found
        row = {
            "frames": n,
            **{
                side: {
                    "wall_s": round(median(w), 3),
                    "frames_per_s": round(n / median(w), 1),
                    "cuts": len(cuts[side]),
                    "max_cut_error_s": max_error(cuts[side], planted),
                }
                for side, w in walls.items()
            },
        }
        row["ratio"] = round(row["ours"]["frames_per_s"] / row["ffmpeg_select"]["frames_per_s"], 3)
        if sd:
            row["ratio_pyscenedetect"] = round(
                row["ours"]["frames_per_s"] / row["pyscenedetect"]["frames_per_s"], 3
            )
        res[name] = row
        print(
            f"a. {name}: {n} frames; ours {row['ours']['frames_per_s']} frames/s, "
            f"bare ffmpeg select {row['ffmpeg_select']['frames_per_s']} frames/s "
            f"({row['ratio']}x)"
            + (f", PySceneDetect {row['pyscenedetect']['frames_per_s']}" if sd else "")
        )
    return res


def fresh_ray() -> None:
    """A new embedded Ray (the old one stopped): its workers hold nothing from earlier jobs."""
    import ray

    from engine.ray_session import start_embedded

    if ray.is_initialized():
        ray.shutdown()
    start_embedded(num_cpus=os.cpu_count() or 2, object_store_mb=500)


def tiny_internvl(work: Path) -> Path:
    """The tiny random InternVL under ``work``, written the first time (kept for later runs)."""
    from vl3data.tiny_models import write_tiny_internvl

    model = work / "internvl"
    if not (model / "config.json").is_file():
        write_tiny_internvl(model)
    return model


@contextlib.contextmanager
def caption_server(work: Path, url: str | None = None, name: str | None = None) -> Iterator[str]:
    """``transformers serve`` holding the tiny InternVL on 127.0.0.1 (or the server already
    running at ``url``, serving the model as ``name``), asked for one clip's caption before it
    is used (so no round pays its first answer); its base URL."""
    from recaption.engines.base import EngineConfig, Request, SamplingConfig
    from recaption.engines.openai_engine import OpenAIEngine

    if str(ROOT) not in sys.path:  # the tests' server runner (offline, process group) is used
        sys.path.insert(0, str(ROOT))
    from tests.recaption.servers import start_server
    from vl3data.sample_media import jpeg_bytes, real_photos

    model = tiny_internvl(work)
    (work / "serve").mkdir(parents=True, exist_ok=True)
    server = None if url else start_server(model, work / "serve")
    base_url = url or server.base_url
    try:
        engine = OpenAIEngine(
            EngineConfig(kind="openai", model=name or str(model), base_url=base_url)
        )
        engine.setup()
        frames = [(float(t), jpeg_bytes(img)) for t, img in enumerate(real_photos().values())]
        (res,) = engine.generate([Request("warm", b"", "Describe.", frames[:4])], SamplingConfig())
        engine.close()
        if res.error:
            raise RuntimeError(f"the caption server did not answer: {res.error}")
        yield base_url
    finally:
        if server is not None:
            server.stop()


def part_b(
    path: Path,
    rounds: int,
    caption_every: float,
    caption_frames: int,
    copies: int,
    work: Path,
    cold: bool = False,
    server: str | None = None,
    served_name: str | None = None,
) -> dict:
    from manifests.configs import load_config
    from video_prep.config import VideoConfig
    from video_prep.job import run_video_job
    from video_prep.raw_config import RawVideoConfig
    from video_prep.raw_job import run_raw_video_job

    info = probe_video(path)
    n = frames_of(path) * copies
    videos = work / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    names = [f"{i}_{path.name}" for i in range(copies)]
    for name in names:  # copies: a link out of the input folder is refused (outside_root)
        if not (videos / name).exists():
            shutil.copyfile(path, videos / name)
    for old in set(os.listdir(videos)) - set(names):  # an earlier run's extra copies (--work)
        (videos / old).unlink()
    segs, t = [], 0.0
    while t < info.duration - 1:
        end = min(info.duration, t + caption_every)
        segs.append({"start": t, "end": end, "text": f"The pattern runs from {t:.0f} s."})
        t = end
    ann = work / "annotations.jsonl"
    ann.write_text("".join(json.dumps({"video": v, "segments": segs}) + "\n" for v in names))
    model = tiny_internvl(work)
    common = ["frames.max_side=448", "input.partition_size=1"]

    def captioned(r: int) -> tuple[float, dict]:
        out = work / f"video_{r}"
        sets = [f"output={out}", f"input.videos={videos}", f"input.annotations={ann}", *common]
        cfg = load_config(VideoConfig, str(ROOT / "configs/video_demo.yaml"), sets)
        t0 = time.perf_counter()
        run_video_job(cfg, restart=True, progress=False)
        return time.perf_counter() - t0, json.loads((out / "caption" / "stats.json").read_text())

    def raw(r: int) -> tuple[float, dict]:
        out = work / f"raw_{r}"
        sets = [f"output={out}", f"input.videos={videos}", *common]
        name = served_name or model
        sets += [f"captions.short.engine.model={name}", f"captions.max_frames={caption_frames}"]
        if server:
            sets += [
                "captions.short.engine.kind=openai",
                f"captions.short.engine.base_url={server}",
            ]
        cfg = load_config(RawVideoConfig, str(ROOT / "configs/video_raw_demo.yaml"), sets)
        t0 = time.perf_counter()
        run_raw_video_job(cfg, restart=True, progress=False)
        return time.perf_counter() - t0, json.loads((out / "caption" / "stats.json").read_text())

    sides = {"raw": raw, "captioned": captioned}
    walls: dict[str, list[float]] = {k: [] for k in sides}
    decode: dict[str, list[float]] = {k: [] for k in sides}
    model_wait: list[float] = []
    ran_on: dict[str, set[str]] = {k: set() for k in sides}  # "processes" or "ray", by pass
    stage = {"raw": "scenes", "captioned": "prepare"}
    for r in range(rounds):
        for side in list(sides) if r % 2 == 0 else list(sides)[::-1]:
            if cold:
                fresh_ray()
            wall, stats = sides[side](r)
            walls[side].append(wall)
            decode[side].append(stats["timings_s"].get(stage[side], float("nan")))
            ran_on[side].update(
                ph for p in stats["passes_s"].values() for ph in p.get("phases", {})
            )
            if side == "raw":
                model_wait.append(round(stats["timings_s"].get("caption_model", 0.0), 3))
            print(
                f"   round {r} {side}: {wall:.2f} s"
                + (f", waited {model_wait[-1]} s for the caption model" if side == "raw" else "")
            )
    row = {"frames": n, "video": path.name, "copies": copies, "cold": cold, "server": bool(server)}
    for side in sides:
        row[side] = {
            "wall_s": round(median(walls[side]), 3),
            "frames_per_s": round(n / median(walls[side]), 1),
            "decode_stage_s": round(median(decode[side]), 3),
            "decode_frames_per_s": round(n / median(decode[side]), 1),
            "ran_on": sorted(ran_on[side]),
        }
    row["raw"]["walls_s"] = [round(w, 3) for w in walls["raw"]]
    row["raw"]["caption_model_s"] = model_wait
    row["captioned"]["walls_s"] = [round(w, 3) for w in walls["captioned"]]
    row["ratio"] = round(row["raw"]["frames_per_s"] / row["captioned"]["frames_per_s"], 3)
    row["decode_ratio"] = round(
        row["raw"]["decode_frames_per_s"] / row["captioned"]["decode_frames_per_s"], 3
    )
    print(
        f"b. {copies} x {path.name}: raw-video job {row['raw']['frames_per_s']} decoded frames/s, "
        f"caption-bounded job {row['captioned']['frames_per_s']} ({row['ratio']}x; decode "
        f"stages alone {row['decode_ratio']}x)"
    )
    return row


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--shot", type=float, default=100.0, help="seconds between planted cuts")
    p.add_argument("--videos", default="pattern,vtest")
    p.add_argument("--parts", default="a,b")
    p.add_argument("--caption-every", type=float, default=30.0)
    p.add_argument("--caption-frames", type=int, default=4)
    p.add_argument("--copies", type=int, default=1, help="b: copies of the video in the folder")
    p.add_argument("--cold", action="store_true", help="b: a fresh Ray (fresh workers) per job")
    p.add_argument(
        "--local", action="store_true", help="b: no Ray, fresh local worker processes per job"
    )
    p.add_argument(
        "--server", action="store_true", help="b: captions from `transformers serve`, no Ray"
    )
    p.add_argument("--server-url", default=None, help="b, --server: a server already running")
    p.add_argument("--server-model", default=None, help="b, --server-url: its served model name")
    p.add_argument("--scenedetect-python", default=None)
    p.add_argument("--work", default=None, help="where the videos and outputs go (default: temp)")
    args = p.parse_args(argv)
    keep_ray_local()
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_scenes_"))
    work.mkdir(parents=True, exist_ok=True)
    videos: dict[str, tuple[Path, list[float] | None]] = {}
    names = args.videos.split(",")
    if "pattern" in names:
        seconds = args.minutes * 60
        shots = [args.shot] * int(seconds // args.shot)
        if seconds - sum(shots) > 0.04:
            shots.append(seconds - sum(shots))
        path = work / f"pattern_{args.minutes:g}min_cuts.mp4"
        planted = cuts_video(path, shots, size="320x240")
        videos["pattern"] = (path, planted)
    if "vtest" in names and VTEST.is_file():
        videos["vtest"] = (VTEST, None)
    parts = args.parts.split(",")
    res: dict = {"rounds": args.rounds}
    if "a" in parts:
        res["detector"] = part_a(videos, args.rounds, args.scenedetect_python)
    if "b" in parts:
        if args.cold + args.server + args.local > 1:
            p.error("--cold restarts Ray, which --local and --server do not start: choose one")
        first = next(iter(videos.values()))[0]
        with contextlib.ExitStack() as stack:
            url = (
                stack.enter_context(caption_server(work / "b", args.server_url, args.server_model))
                if args.server
                else None
            )
            if not (args.server or args.local):
                from engine.ray_session import start_embedded

                start_embedded(num_cpus=os.cpu_count() or 2, object_store_mb=500)
            res["job"] = part_b(
                first,
                args.rounds,
                args.caption_every,
                args.caption_frames,
                args.copies,
                work / "b",
                args.cold,
                url,
                args.server_model,
            )
    res.update(loadavg=loadavg(), machine=platform.machine(), cpus=os.cpu_count())
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main(sys.argv[1:])
