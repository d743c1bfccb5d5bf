"""The ``video`` job: videos + dense-caption annotations in, one shard set per task out.

    OUT/_work/             the plan, prepared pieces per partition, done markers (resume)
    OUT/{task}/            caption | streaming | grounding: shards/, ledger/, stats.json,
                           report.html and dataset.json (written last: the set is complete)

Every annotated video is decoded once, in parallel over partitions (the engine's runner: one
Ray Data task per partition), and its samples go straight into that partition's own tars of each
task's shard set, in the worker: no intermediate copy of the frames. A killed run resumes at the
first unfinished partition; names come from the partition, so the result does not depend on
scheduling.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from functools import partial
from pathlib import Path

import pyarrow as pa

from engine.finish import Finish, SetName, Tally, set_metas
from engine.job import JobRun, read_stats, run_job, shard_list, sum_timings
from engine.partitions import Partition, count_files
from engine.runner import run_partitions
from engine.workdir import WorkDir
from manifests import ledger
from manifests.configs import config_hash
from manifests.schema import ERROR, KEPT, STATUSES, stable_id
from manifests.shards import ShardSetWriter
from video_prep.annotations import load_annotations, resolve_video
from video_prep.config import VideoConfig
from video_prep.prepare import PrepareVideos

log = logging.getLogger(__name__)

#: issues that reject a whole annotation entry (it gets its own ledger row)
ENTRY_REASONS = {"duplicate_id", "bad_line", "unsafe_path"}


def plan_inputs(cfg: VideoConfig) -> list[dict]:
    """Every input the annotation file names, in file order: a video to prepare, or an entry
    already rejected (bad line, duplicate id, unsafe path, unknown video).

    One item per entry (a JSONL or Charades line, a video of a JSON file): an issue about a
    video that was read (a bad segment or duration, a time rule) goes into that video's
    ``issues``; an issue about no video read (the file, a line, a rejected entry) is its own
    item."""
    anns, issues = load_annotations(cfg.input.annotations, cfg.input.format)
    root = Path(cfg.input.videos)
    exts = tuple(f".{e.lower().lstrip('.')}" for e in cfg.input.extensions)
    by_video: dict[str, list[dict]] = {}
    items: list[dict] = []
    for ann in anns:
        path = resolve_video(root, ann, exts)
        items.append(
            {
                "video_id": ann.video_id,
                "video": str(path) if path else None,
                "ann_duration": ann.duration,
                "segments": [[s.start, s.end, s.text] for s in ann.segments],
                "status": KEPT if path else ERROR,
                "stage": None if path else "resolve",
                "reason": None if path else "unknown_video",
            }
        )
        by_video.setdefault(ann.video_id, [])
    for n, iss in enumerate(issues):
        entry = {"segment": iss.segment_index, "reason": iss.reason, "detail": iss.detail}
        if iss.reason in ENTRY_REASONS or iss.video_id not in by_video:  # no video read
            items.append(
                {
                    "video_id": iss.video_id or _where(cfg.input.annotations, iss.detail, n),
                    "video": None,
                    "ann_duration": None,
                    "segments": [],
                    "status": ERROR,
                    "stage": "annotations",
                    "reason": iss.reason,
                    "issues": [entry],
                }
            )
        else:
            by_video[iss.video_id].append(entry)
    for n, it in enumerate(items):
        it["n"] = n  # position in the plan: ids stay distinct for a repeated video id
        if it["stage"] != "annotations":
            it["issues"] = by_video.get(it["video_id"], [])
    return items


def _where(annotations: str, detail: str, n: int) -> str:
    """A key for an entry rejected before it had a video id: the file and line when known."""
    m = re.match(r"line (\d+)", detail or "")
    return f"{Path(annotations).name}:{m.group(1)}" if m else f"{Path(annotations).name}#issue{n}"


def list_video_partitions(cfg: VideoConfig) -> list[Partition]:
    items = plan_inputs(cfg)
    size = cfg.input.partition_size
    parts = [
        Partition(i // size, "videos", {"items": items[i : i + size]})
        for i in range(0, len(items), size)
    ]
    return parts[: cfg.input.max_partitions]


def load_video_partition(part: Partition, source: str) -> pa.Table:
    items = part.spec["items"]
    keys = [it["video_id"] for it in items]
    return pa.table(
        {
            "id": pa.array([stable_id(source, f"{it['n']}:{it['video_id']}") for it in items]),
            "source": pa.array([source] * len(items), pa.string()),
            "source_key": pa.array(keys, pa.string()),
            "partition": pa.array([part.index] * len(items), pa.int32()),
            "row": pa.array(range(len(items)), pa.int32()),
            "status": pa.array([it["status"] for it in items], pa.string()),
            "stage": pa.array([it["stage"] for it in items], pa.string()),
            "reason": pa.array([it["reason"] for it in items], pa.string()),
            "video": pa.array([it["video"] for it in items], pa.string()),
            "ann_duration": pa.array([it["ann_duration"] for it in items], pa.float64()),
            "annotation": pa.array([json.dumps(it["segments"]) for it in items], pa.string()),
            "issues": pa.array([json.dumps(it["issues"]) for it in items], pa.string()),
        }
    )


def count_video(m: dict, status: str, reason: str | None, clips: str | None) -> None:
    """One video's ledger row into a partition's ``counts``, ``reasons`` and ``clip_reasons``
    (``clips``: the row's clips as JSON, each with its own status and reason)."""
    m["counts"][status] += 1
    if status != KEPT:
        m["reasons"][reason] += 1
    for c in json.loads(clips or "[]"):
        if c["status"] != KEPT:
            m["clip_reasons"][c["reason"]] += 1


def task_rows(rows: pa.Table, task: str) -> tuple[pa.Table, list[list[dict]]]:
    """The ledger rows of one task's shard set, and each row's samples of that task."""
    samples = [[s for s in row if s["task"] == task] for row in rows["samples"].to_pylist()]
    status = rows["status"].to_pylist()
    stage, reason = rows["stage"].to_pylist(), rows["reason"].to_pylist()
    for i, ss in enumerate(samples):
        if status[i] == KEPT and not ss:  # prepared, but nothing for this task
            status[i], stage[i], reason[i] = "dropped", task, f"no_{task}_samples"
    gone = ("samples", "status", "stage", "reason", "annotation")  # raw videos: no annotation
    t = rows.drop_columns([c for c in gone if c in rows.column_names])
    t = t.append_column("status", pa.array(status, pa.string()))
    t = t.append_column("stage", pa.array(stage, pa.string()))
    t = t.append_column("reason", pa.array(reason, pa.string()))
    return t, samples


class VideoShards:
    """Sink of the video job: each prepared video's samples into the partition's own tars of
    every task's shard set, and a ledger part per task."""

    def __init__(self, cfg: VideoConfig):
        self.out, self.tasks = Path(cfg.output), list(cfg.tasks)
        self.max_count, self.max_bytes = cfg.shards.max_count, cfg.shards.max_bytes

    def write(self, part: Partition, chunks: Iterator[pa.Table]) -> dict:
        writers = {
            t: ShardSetWriter(self.out / t, t, self.max_count, self.max_bytes, part.index)
            for t in self.tasks
        }
        meta = {
            t: {
                "counts": Counter(dict.fromkeys(STATUSES, 0)),
                "reasons": Counter(),
                "clip_reasons": Counter(),
                "samples": 0,
                "frames": 0,
                "second_decodes": 0,
            }
            for t in self.tasks
        }
        ledgers: dict[str, list[pa.Table]] = {t: [] for t in self.tasks}
        for rows in chunks:
            for task in self.tasks:
                ledgers[task].append(self._write_task(rows, task, writers[task], meta[task]))
        out: dict = {"sets": {}}
        for task in self.tasks:
            tdir = self.out / task
            if ledgers[task]:
                ledger.write_part(tdir, part.index, pa.concat_tables(ledgers[task]))
            else:
                ledger.part_path(tdir, part.index).unlink(missing_ok=True)
            m = meta[task]
            out["sets"][task] = {
                **{k: dict(v) if isinstance(v, Counter) else v for k, v in m.items()},
                "shards": writers[task].close(),
            }
        return out

    @staticmethod
    def _write_task(rows: pa.Table, task: str, writer: ShardSetWriter, m: dict) -> pa.Table:
        return write_task(rows, task, writer, m)


#: where a row's sample frames come from: ``(row index, its samples)`` -> a context giving each
#: sample's JPEG frames (default: the bytes the samples carry)
FramesOf = Callable[[int, list[dict]], AbstractContextManager[Callable[[dict], Iterable[bytes]]]]


def _carried(i: int, samples: list[dict]) -> AbstractContextManager:
    return nullcontext(lambda s: s["frames"])


def write_task(
    rows: pa.Table, task: str, writer: ShardSetWriter, m: dict, frames_of: FramesOf = _carried
) -> pa.Table:
    """One task's samples of these video rows into its shard set; the rows' ledger part (their
    shard and sample keys), and the partition's counts in ``m``."""
    rows, samples = task_rows(rows, task)
    shards, keys = [], []
    for i, (st, rs, ss, clips) in enumerate(
        zip(
            rows["status"].to_pylist(),
            rows["reason"].to_pylist(),
            samples,
            rows["clips"].to_pylist(),
            strict=True,
        )
    ):
        count_video(m, st, rs, clips)
        sh, ks = [], []
        with frames_of(i, ss) as frames:
            for s in ss:
                sample = {"__key__": s["key"], "json": s["record"].encode()}
                for j, fr in enumerate(frames(s)):
                    sample[f"f{j:04d}.jpg"] = fr
                sh.append(writer.write(sample))
                ks.append(s["key"])
                m["frames"] += len(s["frames"])
        m["samples"] += len(ss)
        shards.append(sh[0] if sh else None)
        keys.append(json.dumps(ks) if ks else None)
    m["second_decodes"] += sum(1 for p in rows["decode_passes"].to_pylist() if (p or 0) >= 2)
    rows = rows.append_column("shard", pa.array(shards, pa.string()))
    rows = rows.append_column("keys", pa.array(keys, pa.string()))
    return ledger.to_ledger(rows)


def finalize(cfg: VideoConfig, run: JobRun, metas: dict[int, dict]) -> dict:
    """Each task's stats.json and dataset.json, from the partitions' metadata."""
    finish, docs = Finish.of(run), {}
    for task in cfg.tasks:
        per_part = set_metas(metas, task)
        tally = Tally.of(
            per_part, ("reasons", "clip_reasons"), ("samples", "frames", "second_decodes")
        )
        stats = finish.stats(tally, sum_timings(metas), {"task": task})
        name = SetName(f"{cfg.name}-{task}", "video", task, config_hash(cfg))
        folder = Path(cfg.output) / task
        docs[task] = finish.write(folder, stats, name, shard_list(per_part), f"video {task}")
    return docs


def _report(tdir: Path) -> None:
    from video_prep.report import write_video_report

    write_video_report(tdir)


class VideoJob:
    """The video job for ``engine.job.run_job``: one pass that prepares and writes."""

    name = "video"
    help = "videos + annotations into caption/streaming/grounding sets"
    unit = "videos"
    config_class = VideoConfig

    def inputs(self, cfg: VideoConfig) -> dict[str, tuple[str, str]]:
        return {
            "videos": ("input.videos", cfg.input.videos),
            "annotations": ("input.annotations", cfg.input.annotations),
        }

    def outputs(self, cfg: VideoConfig) -> dict[str, Path]:
        return {t: Path(cfg.output) / t for t in cfg.tasks}

    def config_hash(self, cfg: VideoConfig, blank: tuple[str, ...] = ()) -> str:
        return config_hash(cfg, blank=blank)

    def measure(self, cfg: VideoConfig) -> dict:
        stats = [read_stats(d) for d in self.outputs(cfg).values()]
        return {
            "unit": "videos",
            "inputs": stats[0]["inputs"],
            "outputs": sum(s["samples"] for s in stats),
            "wall_s": stats[0]["wall_s"],
            "frames": sum(s["frames"] for s in stats),
        }

    def partitions(self, cfg: VideoConfig) -> list[Partition]:
        return list_video_partitions(cfg)

    def needs_ray(self, cfg: VideoConfig) -> bool:
        return False  # one pass of plain tasks: decode, sample, write

    def count_inputs(self, cfg: VideoConfig) -> int | None:
        inp = cfg.input
        if not Path(inp.videos).is_dir():
            return None
        n = count_files(Path(inp.videos), inp.extensions)
        return n if inp.max_partitions is None else min(n, inp.max_partitions * inp.partition_size)

    def report(self, out_dir: Path) -> None:
        _report(out_dir)

    def run(self, run: JobRun) -> dict[str, dict]:
        cfg = run.cfg
        source = f"video:{cfg.input.format}:{Path(cfg.input.annotations).name}"
        metas = run_partitions(
            WorkDir(run.work_root / "prepare"),
            run.parts,
            partial(load_video_partition, source=source),
            [PrepareVideos(cfg)],
            sink=VideoShards(cfg),
            progress=run.progress,
            unit="videos",
            chunk_rows=1,
        )
        return finalize(cfg, run, metas)


def run_video_job(cfg: VideoConfig, *, restart: bool = False, progress: bool = True) -> dict:
    """Run (or finish) the video job; returns ``{task: dataset.json}``."""
    return run_job(VideoJob(), cfg, restart=restart, progress=progress)
