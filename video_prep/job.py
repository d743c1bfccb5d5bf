"""The ``video`` job: videos + dense-caption annotations in, one shard set per task out.

    OUT/_work/             the plan, prepared pieces per partition, done markers (resume)
    OUT/{task}/            caption | streaming | grounding: shards/, ledger/, stats.json,
                           report.html and dataset.json (written last: the set is complete)

Every annotated video is decoded once, in parallel over partitions with Ray Data (the curation
runner: a killed run resumes at the first unfinished partition); the final write goes through the
pieces in (partition, row) order, so the result does not depend on scheduling.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import shutil
import time
from collections import Counter
from functools import partial
from pathlib import Path

import pyarrow as pa

from curation.runner import WorkDir, prepare_plan, run_partitions
from curation.sources import Partition
from manifests import ledger
from manifests.atomic import write_json
from manifests.configs import config_hash
from manifests.dataset import DATASET_JSON, read_dataset_json, write_dataset_json
from manifests.schema import ERROR, KEPT, STATUSES, stable_id
from manifests.shards import ShardSetWriter
from video_prep.annotations import load_annotations, resolve_video
from video_prep.config import VideoConfig
from video_prep.prepare import PrepareVideos

log = logging.getLogger(__name__)

#: issues that reject a whole annotation entry (it gets its own ledger row)
ENTRY_REASONS = {"duplicate_id", "bad_line", "bad_format", "unsafe_path"}


def plan_inputs(cfg: VideoConfig) -> list[dict]:
    """Every input the annotation file names, in file order: a video to prepare, or an entry
    already rejected (bad line, duplicate id, unsafe path, unknown video)."""
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
        if iss.reason in ENTRY_REASONS or iss.video_id not in by_video:
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


def _task_rows(rows: pa.Table, task: str) -> tuple[pa.Table, list[list[dict]]]:
    """The ledger rows of one task's shard set, and each row's samples of that task."""
    samples = [[s for s in row if s["task"] == task] for row in rows["samples"].to_pylist()]
    status = rows["status"].to_pylist()
    stage, reason = rows["stage"].to_pylist(), rows["reason"].to_pylist()
    for i, ss in enumerate(samples):
        if status[i] == KEPT and not ss:  # prepared, but nothing for this task
            status[i], stage[i], reason[i] = "dropped", task, f"no_{task}_samples"
    t = rows.drop_columns(["samples", "status", "stage", "reason", "annotation"])
    t = t.append_column("status", pa.array(status, pa.string()))
    t = t.append_column("stage", pa.array(stage, pa.string()))
    t = t.append_column("reason", pa.array(reason, pa.string()))
    return t, samples


def finalize(cfg: VideoConfig, work: WorkDir, parts: list[Partition], wall_s: float) -> dict:
    out = Path(cfg.output)
    docs = {}
    for task in cfg.tasks:
        tdir = out / task
        for sub in ("shards", "ledger"):
            shutil.rmtree(tdir / sub, ignore_errors=True)
        writer = ShardSetWriter(tdir, task, cfg.shards.max_count, cfg.shards.max_bytes)
        counts: Counter = Counter(dict.fromkeys(STATUSES, 0))
        reasons: Counter = Counter()
        clip_reasons: Counter = Counter()
        n_samples = frames = passes2 = 0
        for part in parts:
            rows = work.read_partition(part.index)
            if rows is None:
                continue
            rows, samples = _task_rows(rows, task)
            shards, keys = [], []
            for st, rs, ss, clips in zip(
                rows["status"].to_pylist(),
                rows["reason"].to_pylist(),
                samples,
                rows["clips"].to_pylist(),
                strict=True,
            ):
                counts[st] += 1
                if st != KEPT:
                    reasons[rs] += 1
                for c in json.loads(clips or "[]"):
                    if c["status"] != KEPT:
                        clip_reasons[c["reason"]] += 1
                sh, ks = [], []
                for s in ss:
                    sample = {"__key__": s["key"], "json": s["record"].encode()}
                    for j, fr in enumerate(s["frames"]):
                        sample[f"f{j:04d}.jpg"] = fr
                    sh.append(writer.write(sample))
                    ks.append(s["key"])
                    frames += len(s["frames"])
                n_samples += len(ss)
                shards.append(sh[0] if sh else None)
                keys.append(json.dumps(ks) if ks else None)
            passes2 += sum(1 for p in rows["decode_passes"].to_pylist() if p == 2)
            rows = rows.append_column("shard", pa.array(shards, pa.string()))
            rows = rows.append_column("keys", pa.array(keys, pa.string()))
            ledger.write_part(tdir, part.index, rows)
        shard_list = writer.close()
        stats = {
            "task": task,
            "inputs": sum(counts.values()),
            **counts,
            "samples": n_samples,
            "frames": frames,
            "reasons": dict(reasons),
            "clip_reasons": dict(clip_reasons),
            "second_decodes": passes2,
            "wall_s": round(wall_s, 3),
            "partitions": len(parts),
        }
        write_json(tdir / "stats.json", stats)
        docs[task] = write_dataset_json(
            tdir,
            name=f"{cfg.name}-{task}",
            modality="video",
            task=task,
            shards=shard_list,
            config=dataclasses.asdict(cfg),
            config_hash=config_hash(cfg),
            extra={"inputs": stats["inputs"], "ledger_parts": len(parts)},
        )
        _report(tdir)
    return docs


def _report(tdir: Path) -> None:
    from video_prep.report import write_video_report

    write_video_report(tdir)


def _complete(cfg: VideoConfig) -> bool:
    out = Path(cfg.output)
    return all((out / t / DATASET_JSON).is_file() for t in cfg.tasks)


def run_video_job(cfg: VideoConfig, *, restart: bool = False, progress: bool = True) -> dict:
    """Run (or finish) the video job; returns ``{task: dataset.json}``."""
    from curation.ray_session import init_ray

    cfg.check_runnable()
    out = Path(cfg.output)
    chash = config_hash(cfg)
    if restart:
        for sub in (*cfg.tasks, "_work"):
            shutil.rmtree(out / sub, ignore_errors=True)
    if _complete(cfg):
        docs = {t: read_dataset_json(out / t) for t in cfg.tasks}
        if all(d.get("config_hash") == chash for d in docs.values()):
            log.info("%s is already complete (same config); nothing to do", out)
            return docs
        raise RuntimeError(
            f"{out} already holds shard sets built with another config; "
            "choose a new output or pass --restart to rebuild them"
        )
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    work = WorkDir(out / "_work" / "prepare")
    parts = prepare_plan(out / "_work" / "plan.json", partial(list_video_partitions, cfg), chash)
    log.info("%d partitions of up to %d videos", len(parts), cfg.input.partition_size)
    source = f"video:{cfg.input.format}:{Path(cfg.input.annotations).name}"
    started = init_ray(cfg.ray.address, cfg.ray.num_cpus, cfg.ray.object_store_mb, cfg.log_level)
    try:
        run_partitions(
            work,
            parts,
            partial(load_video_partition, source=source),
            [PrepareVideos(cfg)],
            progress=progress,
        )
    finally:
        if started:
            import ray

            ray.shutdown()
    docs = finalize(cfg, work, parts, time.time() - t0)
    if not cfg.keep_work:
        shutil.rmtree(out / "_work", ignore_errors=True)
    for task, doc in docs.items():
        log.info("%s: %d samples in %d shards", task, doc["samples"], len(doc["shards"]))
    return docs
