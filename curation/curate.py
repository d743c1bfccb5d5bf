"""The ``curate`` job: a raw image pool in, a curated WebDataset shard set out.

Score first (the stages, in parallel, resumable per partition), write last (here, in one
deterministic pass): shards, the ledger, stats, the report, and ``dataset.json`` as the marker
that the shard set is complete.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import time
from functools import partial
from pathlib import Path

import pyarrow as pa

from curation.config import CurateConfig
from curation.pipeline import build_stages, thresholds
from curation.runner import WorkDir, prepare_plan, run_partitions
from curation.sources import list_partitions, load_partition
from manifests import ledger
from manifests.atomic import write_json
from manifests.dataset import DATASET_JSON, read_dataset_json, write_dataset_json
from manifests.schema import KEPT, STATUSES
from manifests.shards import ShardSetWriter

log = logging.getLogger(__name__)

# in the ledger but not the training record
NOT_IN_RECORD = {"image", "thumb", "status", "stage", "reason", "partition", "row", "ext"}


def config_hash(cfg: CurateConfig) -> str:
    """What decides the result: everything but where and how it runs."""
    d = dataclasses.asdict(cfg)
    for k in ("ray", "log_level", "keep_work", "output"):
        d.pop(k, None)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def training_record(row: dict, key: str, ext: str) -> dict:
    """The sample's ``json`` member: LLaVA/VideoLLaMA3 style (DESIGN §5) plus its scores.

    Curated images have no caption of ours yet; the alt-text, where present, is the answer
    (recaptioning replaces it).
    """
    rec = {k: v for k, v in row.items() if k not in NOT_IN_RECORD and v is not None}
    rec["key"] = key
    rec["image"] = [f"{key}.{ext}"]
    if row.get("meta"):
        rec["meta"] = json.loads(row["meta"])
    if row.get("text"):
        rec["conversations"] = [
            {"from": "human", "value": "<image>\nDescribe the image briefly."},
            {"from": "gpt", "value": row["text"]},
        ]
    return rec


def finalize(cfg: CurateConfig, work: WorkDir, parts, wall_s: float) -> dict:
    out = Path(cfg.output)
    for sub in ("shards", "ledger"):  # leftovers of an interrupted final write
        shutil.rmtree(out / sub, ignore_errors=True)
    writer = ShardSetWriter(out, cfg.shards.subset, cfg.shards.max_count, cfg.shards.max_bytes)
    counts = dict.fromkeys(STATUSES, 0)
    timings: dict[str, float] = {}
    for part in parts:
        rows = work.read_partition(part.index) if _rows(work, part.index) else None
        for k, v in work.timings(part.index).items():
            timings[k] = timings.get(k, 0.0) + v
        if rows is None:
            continue
        shards, keys = [None] * rows.num_rows, [None] * rows.num_rows
        status = rows["status"].to_pylist()
        for i, row in enumerate(rows.to_pylist()):
            counts[status[i]] += 1
            if status[i] != KEPT:
                continue
            key, ext = row["id"], row["ext"] or "jpg"
            rec = training_record(row, key, ext)
            sample = {"__key__": key, ext: row["image"], "json": json.dumps(rec).encode()}
            shards[i], keys[i] = writer.write(sample), key
        rows = rows.append_column("shard", pa.array(shards, pa.string()))
        rows = rows.append_column("key", pa.array(keys, pa.string()))
        ledger.write_part(out, part.index, rows)
    shard_list = writer.close()
    stages = ["read", *[getattr(s, "name", "?") for s in build_stages(cfg)]]
    stats = {
        "inputs": sum(counts.values()),
        **counts,
        "stages": stages,
        "timings_s": timings,
        "thresholds": thresholds(cfg),
        "wall_s": round(wall_s, 3),
        "partitions": len(parts),
    }
    write_json(out / "stats.json", stats)
    try:
        from manifests.report import write_report

        write_report(out)
    except ImportError:  # pragma: no cover - report module arrives with the report issue work
        log.warning("report module missing; skipping report.html")
    doc = write_dataset_json(
        out,
        name=cfg.name,
        modality="image",
        task="curated_images",
        shards=shard_list,
        config=dataclasses.asdict(cfg),
        config_hash=config_hash(cfg),
        extra={"inputs": stats["inputs"], "ledger_parts": len(parts)},
    )
    return doc


def _rows(work: WorkDir, partition: int) -> int:
    return json.loads(work.done(partition).read_text())["rows"]


def curate(cfg: CurateConfig, *, restart: bool = False, progress: bool = True) -> dict:
    """Run (or finish) the curation job; returns the shard set's ``dataset.json``."""
    from curation.ray_session import init_ray

    cfg.check_runnable()
    out = Path(cfg.output)
    chash = config_hash(cfg)
    if (out / DATASET_JSON).is_file() and not restart:
        doc = read_dataset_json(out)
        if doc.get("config_hash") == chash:
            log.info("%s is already complete (same config); nothing to do", out)
            return doc
        raise RuntimeError(
            f"{out} already holds a shard set built with another config; "
            "choose a new output or pass --restart to rebuild it"
        )
    if restart:
        for sub in (DATASET_JSON, "shards", "ledger", "stats.json", "report.html"):
            p = out / sub
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    work = WorkDir(out / "_work")
    parts = prepare_plan(work, partial(list_partitions, cfg.input), chash, restart=restart)
    log.info("%d partitions of up to %d inputs", len(parts), cfg.input.partition_size)
    started = init_ray(cfg.ray.address, cfg.ray.num_cpus, cfg.ray.object_store_mb, cfg.log_level)
    try:
        run_partitions(
            work,
            parts,
            partial(load_partition, cfg=cfg.input),
            build_stages(cfg),
            progress=progress,
        )
    finally:
        if started:
            import ray

            ray.shutdown()
    doc = finalize(cfg, work, parts, time.time() - t0)
    if not cfg.keep_work:
        shutil.rmtree(work.root, ignore_errors=True)
    log.info("wrote %d samples in %d shards to %s", doc["samples"], len(doc["shards"]), out)
    return doc
