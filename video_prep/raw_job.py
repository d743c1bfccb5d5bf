"""The ``video-raw`` job: a folder of raw videos (no captions) in; caption, streaming and
grounding shard sets out, from scene-cut clips and model-written clip captions.

With caption engines on the CPU (transformers, no GPU: the demo, the tests), ONE pass:

    OUT/_work/videos/     partition tasks: each video probed and decoded ONCE (its scene cuts
                          and 1-fps grid from the same ffmpeg run), cut into clips, the clips
                          captioned in the task (:mod:`video_prep.raw_captions`: the model
                          loaded once per worker process, while the first video decodes), and
                          every task's samples written into the partition's own tars; one
                          ledger row per video

With engines that want a pool (vLLM, transformers on a GPU, an OpenAI-compatible server), three:

    OUT/_work/scenes/     pass 1 (partition tasks): decode and cut, as above; one row per clip
                          in the partition's pieces, its frames in the video's FrameStore
                          (``spill/``, :mod:`video_prep.raw_frames`)
    OUT/_work/captions/   pass 2 (an actor pool): each clip's short (and detailed) caption by
                          the model, through recaption's engines, gates and retries; no frames
    OUT/_work/write/      pass 3 (partition tasks): each partition's clips and captions,
                          grouped by video, every task's samples written into the partition's
                          own tars (frames read from the stores one sample at a time); one
                          ledger row per video

    OUT/{task}/           caption | streaming | grounding: shards/, ledger/, stats.json,
                          report.html and dataset.json (written last: the set is complete)

Every video found is an input: a broken file, an audio-only file or one that yields no clip
gets its ledger row with a reason, like the caption-bounded job (:mod:`video_prep.job`), whose
sink writes the shards here too. A killed run resumes at the first unfinished partition of the
pass it was in.
"""

from __future__ import annotations

import bisect
import copy
import json
import os
import shutil
import stat
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import pyarrow as pa

from engine.finish import Finish, SetName, Tally, set_metas
from engine.job import (
    JobRun,
    local_path,
    read_stats,
    run_job,
    shard_list,
    sum_timings,
)
from engine.partitions import Partition, count_files
from engine.runner import run_partitions
from engine.workdir import WorkDir
from engine.worker_memory import WorkerMemory
from manifests import ledger
from manifests.configs import RUN_FIELDS, config_hash
from manifests.schema import DROPPED, ERROR, KEPT, stable_id
from manifests.shards import ShardSetWriter
from video_prep.job import VideoShards, write_task
from video_prep.prepare import SAMPLE_TYPE, TRUNCATED_TOLERANCE_S
from video_prep.probe import VideoError, probe_video
from video_prep.raw_captions import (
    InTaskClipCaptions,
    StartCaptionModel,
    StoredClipCaptionStage,
    WaitCaptionModel,
    in_task,
    worker_memory,
)
from video_prep.raw_config import RawVideoConfig
from video_prep.raw_frames import FrameStore, remove_store
from video_prep.raw_samples import CaptionedClip, raw_samples
from video_prep.samples import ClipFrames
from video_prep.scenes import decode_with_cuts, plan_clips

#: rows of one video in the clip table: row = video_row * ROW_STRIDE + clip index + 1
ROW_STRIDE = 1 << 20

#: per-video columns, carried on each of its clip rows and into the ledger
VIDEO_COLUMNS: dict[str, pa.DataType] = {
    "video_status": pa.string(),
    "video_stage": pa.string(),
    "video_reason": pa.string(),
    "duration": pa.float64(),
    "fps": pa.float64(),
    "width": pa.int32(),
    "height": pa.int32(),
    "rotation": pa.int32(),
    "codec": pa.string(),
    "grid_frames": pa.int32(),
    "decode_passes": pa.int32(),
    "decode_s": pa.float64(),
    "cuts": pa.string(),
    "issues": pa.string(),
}
#: per-clip columns of the clip table
CLIP_COLUMNS: dict[str, pa.DataType] = {
    "row": pa.int64(),
    "clip_index": pa.int32(),
    "clip_start": pa.float64(),
    "clip_end": pa.float64(),
    "clip": pa.string(),  # the clip's summary (scenes.RawClip.summary)
    "status": pa.string(),
    "stage": pa.string(),
    "reason": pa.string(),
    "frames": pa.list_(pa.binary()),
    "timestamps": pa.list_(pa.float64()),
    "indices": pa.list_(pa.int32()),
    "frame_width": pa.int32(),
    "frame_height": pa.int32(),
    # one pass: ``frames`` is left empty and the clip's frames (its ``indices`` on the grid)
    # are read from the video's FrameStore at this path (video_prep.raw_frames)
    "frames_at": pa.string(),
}


# --- inputs -------------------------------------------------------------------------------


def list_videos(cfg: RawVideoConfig) -> list[str]:
    """Video files under ``input.videos`` (relative paths, sorted), symlinked folders not
    followed."""
    root = Path(cfg.input.videos)
    exts = {e.lower().lstrip(".") for e in cfg.input.extensions}
    files: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        rel = os.path.relpath(dirpath, root)
        prefix = "" if rel == "." else rel + os.sep
        files += [prefix + f for f in filenames if "." in f and f.rsplit(".", 1)[1].lower() in exts]
    return sorted(files)


def list_raw_partitions(cfg: RawVideoConfig) -> list[Partition]:
    files, size = list_videos(cfg), cfg.input.partition_size
    parts = [
        Partition(i // size, "videos", {"files": files[i : i + size]})
        for i in range(0, len(files), size)
    ]
    return parts[: cfg.input.max_partitions]


def source_name(cfg: RawVideoConfig) -> str:
    return f"video-raw:{Path(cfg.input.videos).resolve()}"


def load_raw_partition(part: Partition, root: str, source: str) -> pa.Table:
    """The partition's videos as ledger rows; a path that leaves the input folder (a symlink
    out of it) or is not a regular file is refused here, before anything opens it."""
    base = Path(root).resolve()
    files = part.spec["files"]
    paths, status, reason = [], [], []
    for rel in files:
        path, why = base / rel, None
        try:
            real = path.resolve()
            if not real.is_relative_to(base):
                why = "outside_root"
            elif not stat.S_ISREG(real.stat().st_mode):
                why = "not_a_file"
        except (OSError, RuntimeError):
            why = "missing_video"
        paths.append(None if why else str(real))
        status.append(ERROR if why else KEPT)
        reason.append(why)
    n = len(files)
    return pa.table(
        {
            "id": pa.array([stable_id(source, rel) for rel in files], pa.string()),
            "source": pa.array([source] * n, pa.string()),
            "source_key": pa.array(files, pa.string()),
            "partition": pa.array([part.index] * n, pa.int32()),
            "row": pa.array(range(n), pa.int32()),
            "status": pa.array(status, pa.string()),
            "stage": pa.array([None if r is None else "load" for r in reason], pa.string()),
            "reason": pa.array(reason, pa.string()),
            "video": pa.array(paths, pa.string()),
        }
    )


# --- pass 1: scenes -------------------------------------------------------------------------


class CutScenes:
    """Partition task stage: video rows in, one row per clip out (a failed video: one row
    with its reason). Each video is probed, decoded once (cuts + 1-fps grid), cut into clips.

    With ``spill`` (the one-pass job), the grid's frames go to a FrameStore under
    ``spill/p{partition}/`` as they are decoded and the clip rows name it (``frames_at``)
    instead of holding the bytes: the task's memory does not grow with the video."""

    name = "scenes"

    def __init__(self, cfg: RawVideoConfig, spill: Path | None = None):
        self.cfg = cfg
        self.spill = spill

    def __call__(self, batch: pa.Table) -> pa.Table:
        out: list[dict] = []
        for r in batch.to_pylist():
            out += self.video(r)
        keep = ("id", "source", "source_key", "partition")
        schema = pa.schema(
            [batch.schema.field(c) for c in keep]
            + [pa.field("video_row", pa.int32())]
            + [pa.field(c, t) for c, t in {**VIDEO_COLUMNS, **CLIP_COLUMNS}.items()]
        )
        return pa.Table.from_pylist(out, schema)

    def video(self, r: dict) -> list[dict]:
        if self.spill is None or r["status"] != KEPT:
            return self._video(r, None)
        store = FrameStore(self.spill / f"p{r['partition']}" / f"v{r['row']:06d}.jpgs")
        try:
            rows = self._video(r, store)
        finally:
            store.close()
        if not any(row["frames_at"] for row in rows):  # failed, or no kept clip: nothing to read
            remove_store(store.path)
        return rows

    def _video(self, r: dict, store: FrameStore | None) -> list[dict]:
        base = {k: r[k] for k in ("id", "source", "source_key", "partition")}
        base["video_row"] = r["row"]
        if r["status"] != KEPT:
            return [self._failed(base, r["status"], r["stage"], r["reason"], {})]
        try:
            info = probe_video(r["video"])
        except VideoError as e:
            return [self._failed(base, ERROR, "probe", e.reason, {}, e.detail)]
        f, s = self.cfg.frames, self.cfg.scenes
        vinfo = {
            "duration": info.duration,
            "fps": info.fps,
            "width": info.width,
            "height": info.height,
            "rotation": info.rotation,
            "codec": info.codec,
        }
        try:
            dec = decode_with_cuts(
                r["video"],
                info,
                fps=f.fps,
                threshold=s.threshold,
                max_side=f.max_side,
                quality=f.jpeg_quality,
                timeout_s=f.decode_timeout_s,
                threads=f.decode_threads,
                frames=store,
            )
        except VideoError as e:
            return [self._failed(base, ERROR, "decode", e.reason, vinfo, e.detail)]
        grid = dec.grid
        vinfo.update(
            grid_frames=grid.n,
            decode_passes=1,
            decode_s=round(grid.decode_s, 4),
            cuts=json.dumps([round(c, 3) for c in dec.cuts]),
        )
        issues = []
        timeline = min(info.duration, info.stream_duration)
        decoded = grid.n / f.fps
        if decoded < info.stream_duration - max(TRUNCATED_TOLERANCE_S, 2.0 / f.fps):
            timeline = decoded  # a truncated file: clips end where its frames do
            detail = f"frames stop at {decoded:.1f} s of the {info.stream_duration:.1f} s declared"
            issues.append({"segment": None, "reason": "truncated", "detail": detail})
        vinfo["issues"] = json.dumps(issues)
        c = self.cfg.clips
        clips = plan_clips(
            dec.cuts,
            timeline,
            max_len_s=c.max_len_s,
            min_len_s=c.min_len_s,
            min_shot_s=s.min_shot_s,
        )
        if not any(cl.status == KEPT for cl in clips):
            reason = "too_short" if clips else "no_frames"
            return [self._failed(base, DROPPED, "clips", reason, vinfo)]
        rows = []
        ks = sorted(grid.frames)
        times = [grid.timestamp(k) for k in ks]
        for cl in clips:  # a clip's grid frames: those stamped in [start, end)
            lo, hi = bisect.bisect_left(times, cl.start), bisect.bisect_left(times, cl.end)
            mine = ks[lo:hi] if cl.status == KEPT else []
            if cl.status == KEPT and not mine:
                cl.status, cl.reason = DROPPED, "no_frames_in_clip"
            rows.append(
                {
                    **base,
                    **dict.fromkeys(VIDEO_COLUMNS),
                    **vinfo,
                    "video_status": KEPT,
                    "row": r["row"] * ROW_STRIDE + cl.index + 1,
                    "clip_index": cl.index,
                    "clip_start": round(cl.start, 6),
                    "clip_end": round(cl.end, 6),
                    "clip": json.dumps(cl.summary()),
                    "status": cl.status,
                    "stage": None if cl.status == KEPT else "clips",
                    "reason": cl.reason,
                    "frames": [grid.frames[k] for k in mine] if store is None else [],
                    "frames_at": str(store.path) if store is not None and mine else None,
                    "timestamps": [grid.timestamp(k) for k in mine],
                    "indices": mine,
                    "frame_width": grid.size[0],
                    "frame_height": grid.size[1],
                }
            )
        return rows

    @staticmethod
    def _failed(base, status, stage, reason, vinfo, detail: str = "") -> dict:
        issues = json.loads(vinfo.get("issues") or "[]")  # a truncated video's, say
        issues += [{"segment": None, "reason": reason, "detail": detail}] if detail else []
        row = {**base, **dict.fromkeys(VIDEO_COLUMNS), **dict.fromkeys(CLIP_COLUMNS), **vinfo}
        row.update(
            video_status=status,
            video_stage=stage,
            video_reason=reason,
            issues=json.dumps(issues),
            row=base["video_row"] * ROW_STRIDE,
            status=status,
            stage=stage,
            reason=reason,
            frames=[],
            timestamps=[],
            indices=[],
        )
        return row


def clip_rows(scenes: WorkDir, part: Partition) -> pa.Table:
    """Loader of the captions pass: the partition's clip rows from the scenes pass."""
    rows = scenes.read_partition(part.index)
    return rows if rows is not None else pa.table({})


# --- pass 3: samples and shards -----------------------------------------------------------

#: ledger columns of a video, from its clip rows
LEDGER_KEEP = ("id", "source", "source_key", "partition", *VIDEO_COLUMNS)


def by_video(rows: pa.Table, frames: pa.ChunkedArray | pa.Array) -> pa.Table:
    """Clip rows (a video's clips together, in row order) and their frames as one row per
    video holding its clips: the clips' fields as JSON, their frames as Arrow lists (no copy)."""
    videos = rows["video_row"].to_pylist()
    starts = [i for i, v in enumerate(videos) if i == 0 or v != videos[i - 1]]
    offsets = pa.array([*starts, len(videos)], pa.int32())
    if isinstance(frames, pa.ChunkedArray):
        frames = frames.combine_chunks()
    clip_frames = pa.ListArray.from_arrays(offsets, frames)
    fields = rows.drop_columns([c for c in ("frames",) if c in rows.column_names])
    clip_json = pa.array([json.dumps(r) for r in fields.to_pylist()], pa.string())
    first = rows.take(pa.array(starts, pa.int64())).select(list(LEDGER_KEEP))
    return (
        first.append_column("row", pa.array([videos[i] for i in starts], pa.int32()))
        .append_column("clip_rows", pa.ListArray.from_arrays(offsets, clip_json))
        .append_column("clip_frames", clip_frames)
    )


class ClipsByVideo:
    """Loader of the writing pass: the partition's captioned clips joined with their frames
    (read back from the scenes pass), one row per video holding its clips."""

    def __init__(self, scenes: WorkDir, captions: WorkDir):
        self.scenes, self.captions = scenes, captions

    def __call__(self, part: Partition) -> pa.Table:
        rows = self.captions.read_partition(part.index)  # in row order: a video's clips together
        if rows is None:
            return pa.table({})
        frames = self.scenes.read_partition(part.index, ["frames"])
        assert frames["row"].equals(rows["row"])  # the same clips
        return by_video(rows, frames["frames"])


class ClipsToVideo:
    """Stage of the one-pass job: a video's captioned clip rows, frames and all, into the one
    row per video that :class:`RawSamples` takes."""

    name = "by_video"

    def __call__(self, batch: pa.Table) -> pa.Table:
        return by_video(batch, batch["frames"])


#: a sample whose frames are grid indices into its video's FrameStore (the one-pass job)
STORED_SAMPLE_TYPE = pa.struct(
    [
        ("task", pa.string()),
        ("key", pa.string()),
        ("record", pa.string()),
        ("frames", pa.list_(pa.int32())),
    ]
)


class RawSamples:
    """Partition task stage of the writing pass: a video's clips into its samples of every
    task, and its ledger fields (status, clips, caption counts). Clips whose frames are in a
    FrameStore give samples that name their frames by grid index (``stored``: the sink reads
    them one sample at a time) and the video's ``frames_at``."""

    name = "samples"

    def __init__(self, cfg: RawVideoConfig, stored: bool = False):
        self.cfg = cfg
        self.model = cfg.captions.short.engine.model
        self.stored = stored

    def __call__(self, batch: pa.Table) -> pa.Table:
        names = ("status", "stage", "reason", "clips", "clips_kept", "samples", "frames_at")
        cols: dict[str, list] = {k: [] for k in names}
        for v in batch.to_pylist():
            clips = [json.loads(c) for c in v["clip_rows"]]
            stored = next((c["frames_at"] for c in clips if c.get("frames_at")), None)
            kept: list[CaptionedClip] = []
            summaries = []
            for c, frames in zip(clips, v["clip_frames"], strict=True):
                if c["clip_index"] is None:  # the video failed before it had clips
                    continue
                summary = json.loads(c["clip"])
                summary.update(status=c["status"], reason=c["reason"])
                summary.update({k: c.get(k) for k in ("short_caption", "detailed_caption")})
                summaries.append(summary)
                if c["status"] == KEPT:
                    frames = c["indices"] if c.get("frames_at") else frames  # names, not bytes
                    cf = ClipFrames(
                        c["indices"], frames, c["timestamps"], (c["frame_width"], c["frame_height"])
                    )
                    kept.append(
                        CaptionedClip(
                            c["clip_index"],
                            c["clip_start"],
                            c["clip_end"],
                            cf,
                            c["short_caption"],
                            c["detailed_caption"],
                        )
                    )
            if v["video_status"] != KEPT and not summaries:
                status, stage, reason = v["video_status"], v["video_stage"], v["video_reason"]
            elif not kept:
                reasons = Counter(s["reason"] for s in summaries)
                status, stage = DROPPED, "clips"
                reason = next(iter(reasons)) if len(reasons) == 1 else "no_kept_clips"
                if v["video_status"] != KEPT:
                    status, stage, reason = v["video_status"], v["video_stage"], v["video_reason"]
            else:
                status, stage, reason = KEPT, None, None
            samples = raw_samples(v["id"], v["source_key"], kept, self.cfg, self.model)
            for k, val in zip(
                cols,
                (status, stage, reason, json.dumps(summaries), len(kept), samples, stored),
                strict=True,
            ):
                cols[k].append(val)
        batch = batch.drop_columns(
            [
                c
                for c in ("status", "stage", "reason", "clip_rows", "clip_frames")
                if c in batch.column_names
            ]
        )
        sample = STORED_SAMPLE_TYPE if self.stored else SAMPLE_TYPE
        types = {"clips_kept": pa.int32(), "samples": pa.list_(sample)}
        if not self.stored:
            del cols["frames_at"]
        for k, vals in cols.items():
            batch = batch.append_column(k, pa.array(vals, types.get(k, pa.string())))
        return batch


class StoredShards(VideoShards):
    """The caption-bounded job's sink for samples whose frames are in their video's FrameStore:
    each sample's frames are read as it is written, so only one sample's frames are in memory.

    ``owned`` (the one pass, whose task made the stores): a partition's spill folder is cleared
    when the partition starts (again) and each video's store removed once every task's samples
    are written. Otherwise (the three passes) the stores are the scenes pass's output, left for
    a rerun of this pass; the job's work folder goes when the job is done."""

    def __init__(self, cfg: RawVideoConfig, spill: Path, owned: bool = True):
        super().__init__(cfg)  # type: ignore[arg-type]  # reads output, tasks and shards
        self.spill, self.owned = spill, owned

    def write(self, part: Partition, chunks: Iterator[pa.Table]) -> dict:
        if not self.owned:
            return super().write(part, chunks)
        folder = self.spill / f"p{part.index}"
        shutil.rmtree(folder, ignore_errors=True)  # an interrupted attempt's
        try:
            return super().write(part, self._removing_stores(chunks))
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    @staticmethod
    def _removing_stores(chunks: Iterator[pa.Table]) -> Iterator[pa.Table]:
        for rows in chunks:
            yield rows  # resumed once every task's samples of these rows are written
            for path in rows["frames_at"].to_pylist() if "frames_at" in rows.column_names else []:
                if path:
                    remove_store(path)

    @staticmethod
    def _write_task(rows: pa.Table, task: str, writer: ShardSetWriter, m: dict) -> pa.Table:
        stores = rows["frames_at"].to_pylist()

        @contextmanager
        def from_store(i: int, samples: list[dict]) -> Iterator[Callable[[dict], Iterable]]:
            """A row's samples name frames of its video's store by grid index."""
            store = FrameStore.open(stores[i]) if stores[i] and samples else None
            try:
                yield lambda s: store.frames(s["frames"])
            finally:
                if store is not None:
                    store.close()

        return write_task(rows.drop_columns(["frames_at"]), task, writer, m, from_store)


# --- the job --------------------------------------------------------------------------------


def raw_hash(cfg: RawVideoConfig, blank: tuple[str, ...] = ()) -> str:
    """What decides the output: where and how fast the caption engines run does not."""
    cfg = copy.deepcopy(cfg)
    for kind in ("short", "detailed"):
        e = getattr(cfg.captions, kind).engine
        e.concurrency, e.num_gpus, e.timeout_s, e.max_retries = 1, 0, 0.0, 0
        e.base_url, e.api_key = "", ""
    return config_hash(cfg, RUN_FIELDS, blank=blank)


def scene_totals(tdir: Path) -> dict:
    """What the scenes and captions passes did, over every video (from a task's ledger: the
    per-video columns are the same in every task's)."""
    try:
        rows = ledger.read_ledger(tdir, ["grid_frames", "decode_s", "cuts", "clips"]).to_pylist()
    except FileNotFoundError:  # no partition at all (an empty folder)
        rows = []
    clips = [c for r in rows for c in json.loads(r.get("clips") or "[]")]
    return {
        "videos_decoded": sum(1 for r in rows if r.get("grid_frames")),
        "grid_frames": sum(r.get("grid_frames") or 0 for r in rows),
        "decode_s": round(sum(r.get("decode_s") or 0.0 for r in rows), 3),
        "cuts": sum(len(json.loads(r.get("cuts") or "[]")) for r in rows),
        "clips": len(clips),
        "clips_kept": sum(1 for c in clips if c["status"] == KEPT),
        "short_captions": sum(1 for c in clips if c.get("short_caption")),
        "detailed_captions": sum(1 for c in clips if c.get("detailed_caption")),
    }


def finalize(cfg: RawVideoConfig, run: JobRun, metas: dict[int, dict], passes: list[dict]) -> dict:
    """Each task's stats.json and dataset.json (``engine.finish``), from the partitions'
    metadata; the reports are drawn by ``engine.job.run_job`` while Ray stops."""
    out, docs = Path(cfg.output), {}
    finish, scenes = Finish.of(run), scene_totals(out / cfg.tasks[0])
    for task in cfg.tasks:
        per_part = set_metas(metas, task)
        tally = Tally.of(per_part, ("reasons", "clip_reasons"), ("samples", "frames"))
        own = {"caption_model": cfg.captions.short.engine.model, "scenes": scenes}
        stats = finish.stats(tally, sum_timings(*passes, metas), {"task": task}, own)
        name = SetName(f"{cfg.name}-{task}", "video", task, raw_hash(cfg))
        docs[task] = finish.write(
            out / task, stats, name, shard_list(per_part), f"video-raw {task}"
        )
    return docs


def _report(tdir: Path) -> None:
    from video_prep.raw_report import write_raw_report

    write_raw_report(tdir)


class RawVideoJob:
    """The raw-video job for ``engine.job.run_job``: scenes, captions, then the write."""

    name = "video-raw"
    help = "raw videos into scene-cut clips with model captions: caption/streaming/grounding"
    unit = "videos"
    config_class = RawVideoConfig

    def inputs(self, cfg: RawVideoConfig) -> dict[str, tuple[str, str]]:
        found = {"videos": ("input.videos", cfg.input.videos)}
        for kind in cfg.captions.kinds():
            if path := local_path(getattr(cfg.captions, kind).engine.model):
                found[f"{kind}_model"] = (f"captions.{kind}.engine.model", path)
        return found

    def outputs(self, cfg: RawVideoConfig) -> dict[str, Path]:
        return {t: Path(cfg.output) / t for t in cfg.tasks}

    def config_hash(self, cfg: RawVideoConfig, blank: tuple[str, ...] = ()) -> str:
        return raw_hash(cfg, blank)

    def measure(self, cfg: RawVideoConfig) -> dict:
        stats = [read_stats(d) for d in self.outputs(cfg).values()]
        return {
            "unit": "videos",
            "inputs": stats[0]["inputs"],
            "outputs": sum(s["samples"] for s in stats),
            "wall_s": stats[0]["wall_s"],
            "frames": sum(s["frames"] for s in stats),
        }

    def partitions(self, cfg: RawVideoConfig) -> list[Partition]:
        return list_raw_partitions(cfg)

    def needs_ray(self, cfg: RawVideoConfig) -> bool:
        return not in_task(cfg.captions)  # captions in an actor pool (GPU, vLLM, a server)

    def worker_memory(self, cfg: RawVideoConfig) -> WorkerMemory | None:
        """What one local worker holds when the captions run in its tasks: its own copy of
        each transformers model, and torch (``engine.job.local_workers``)."""
        return worker_memory(cfg.captions) if in_task(cfg.captions) else None

    def count_inputs(self, cfg: RawVideoConfig) -> int | None:
        inp = cfg.input
        if not Path(inp.videos).is_dir():
            return None
        n = count_files(Path(inp.videos), inp.extensions)
        return n if inp.max_partitions is None else min(n, inp.max_partitions * inp.partition_size)

    def report(self, out_dir: Path) -> None:
        _report(out_dir)

    def run(self, run: JobRun) -> dict[str, dict]:
        cfg = run.cfg
        load = partial(load_raw_partition, root=cfg.input.videos, source=source_name(cfg))
        if in_task(cfg.captions):
            return self.run_in_tasks(run, load)
        scenes = WorkDir(run.work_root / "scenes")
        captions = WorkDir(run.work_root / "captions")
        spill = scenes.root / "spill"  # the grids, read by the later passes a few at a time
        m1 = run_partitions(
            scenes, run.parts, load, [CutScenes(cfg, spill)], progress=run.progress,
            unit="videos", chunk_rows=1,
        )  # fmt: skip
        m2 = run_partitions(
            captions,
            run.parts,
            partial(clip_rows, scenes),
            [StoredClipCaptionStage(cfg.captions)],
            progress=run.progress,
            unit="clips",
            drop_columns=("frames",),
        )
        metas = run_partitions(
            WorkDir(run.work_root / "write"),
            run.parts,
            ClipsByVideo(scenes, captions),
            [RawSamples(cfg, stored=True)],
            sink=StoredShards(cfg, spill, owned=False),
            progress=run.progress,
            unit="videos",
            chunk_rows=1,
        )
        return finalize(cfg, run, metas, [m1, m2])

    @staticmethod
    def run_in_tasks(run: JobRun, load) -> dict[str, dict]:
        """One pass (engines on CPU): each video decoded, cut, captioned and written in its
        partition's task, the caption model loading while the first video decodes."""
        cfg = run.cfg
        spill = run.work_root / "videos" / "spill"  # each video's frames while it is worked on
        stages = [
            StartCaptionModel(cfg.captions),
            CutScenes(cfg, spill),
            WaitCaptionModel(cfg.captions),
            InTaskClipCaptions(cfg.captions),
            ClipsToVideo(),
            RawSamples(cfg, stored=True),
        ]
        metas = run_partitions(
            WorkDir(run.work_root / "videos"),
            run.parts,
            load,
            stages,
            sink=StoredShards(cfg, spill),
            progress=run.progress,
            unit="videos",
            chunk_rows=1,
        )
        return finalize(cfg, run, metas, [])


def run_raw_video_job(cfg: RawVideoConfig, *, restart: bool = False, progress: bool = True) -> dict:
    """Run (or finish) the raw-video job; returns ``{task: dataset.json}``."""
    return run_job(RawVideoJob(), cfg, restart=restart, progress=progress)
