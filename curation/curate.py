"""The ``curate`` job: a raw image pool in, a curated WebDataset shard set out.

Score first (passes of stages, in parallel, resumable per partition), select second (global
steps: top-fraction thresholds, k-means balancing, each recorded as a drop list), write last
(one deterministic pass): shards, the ledger, embeddings, stats, the report, and
``dataset.json`` as the marker that the shard set is complete.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import shutil
import time
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa

from curation.config import CurateConfig
from curation.passes import FIRST_PASS_ONLY, Drops, LoadPrevious, read_rows, top_fraction
from curation.pipeline import build_passes, stage_names, thresholds
from curation.runner import WorkDir, prepare_plan, run_partitions
from curation.sources import list_partitions, load_partition
from manifests import ledger
from manifests.atomic import write_bytes, write_json
from manifests.configs import config_hash, merge
from manifests.dataset import DATASET_JSON, read_dataset_json, write_dataset_json
from manifests.schema import EMBEDDING, HEAVY_COLUMNS, KEPT, STATUSES
from manifests.shards import ShardSetWriter

log = logging.getLogger(__name__)

# in the ledger but not the training record
NOT_IN_RECORD = {
    "image",
    "thumb",
    "status",
    "stage",
    "reason",
    "partition",
    "row",
    "ext",
    *HEAVY_COLUMNS,
}


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


def _save_embeddings(out: Path, partition: int, rows: pa.Table, dtype: str) -> pa.Table:
    """Write a partition's embeddings to ``embeddings/part-*.npy``; the ledger keeps the row."""
    if EMBEDDING not in rows.column_names:
        return rows
    vectors = rows[EMBEDDING].to_pylist()
    index = [None] * len(vectors)
    kept = []
    for i, v in enumerate(vectors):
        if v is not None:
            index[i] = len(kept)
            kept.append(v)
    if kept:
        buf = io.BytesIO()
        np.save(buf, np.asarray(kept, dtype=dtype), allow_pickle=False)
        write_bytes(out / "embeddings" / f"part-{partition:06d}.npy", buf.getvalue())
    return rows.append_column("embedding_row", pa.array(index, pa.int32()))


def _with_clusters(rows: pa.Table, lookup: dict) -> pa.Table:
    if not lookup:
        return rows
    found = [lookup.get(i) for i in rows["id"].to_pylist()]
    rows = rows.append_column("cluster", pa.array([f[0] if f else None for f in found], pa.int32()))
    return rows.append_column(
        "cluster_dist", pa.array([f[1] if f else None for f in found], pa.float32())
    )


def finalize(
    cfg: CurateConfig,
    work_root: Path,
    parts,
    last: WorkDir,
    base: WorkDir,
    drops: Drops,
    passes: list[str],
    global_stats: dict,
    wall_s: float,
) -> dict:
    from curation.balance import ClusterLookup

    out = Path(cfg.output)
    for sub in ("shards", "ledger", "embeddings"):  # leftovers of an interrupted final write
        shutil.rmtree(out / sub, ignore_errors=True)
    writer = ShardSetWriter(out, cfg.shards.subset, cfg.shards.max_count, cfg.shards.max_bytes)
    clusters = ClusterLookup(work_root)
    counts = dict.fromkeys(STATUSES, 0)
    timings: dict[str, float] = {}
    for part in parts:
        for name in passes:
            for k, v in WorkDir(work_root / name).timings(part.index).items():
                timings[k] = timings.get(k, 0.0) + v
        rows = read_rows(last, base, drops, part.index)
        if rows is None:
            continue
        rows = _with_clusters(rows, clusters.for_partition(part.index))
        rows = _save_embeddings(out, part.index, rows, cfg.clip.embeddings_dtype)
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
    stats = {
        "inputs": sum(counts.values()),
        **counts,
        "stages": stage_names(cfg),
        "timings_s": timings,
        "thresholds": {**thresholds(cfg), **global_stats.get("thresholds", {})},
        "wall_s": round(wall_s, 3),
        "partitions": len(parts),
    }
    if "clusters" in global_stats:
        stats["clusters"] = global_stats["clusters"]
    write_json(out / "stats.json", stats)
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
    _write_report(out)
    return doc


def _write_report(out: Path) -> None:
    """After dataset.json (the report reads it); a rerun redoes it if a crash came between."""
    from manifests.report import write_report

    write_report(out)


def _global_step(state_path: Path, state: dict, key: str, run) -> dict:
    """Run a global step once. ``run`` returns what to merge into the saved state, so a rerun
    after a crash reuses the result instead of redoing the step."""
    if key in state.get("done", []):
        return state
    state = merge(state, run())
    state["done"] = [*state.get("done", []), key]
    write_json(state_path, state)
    return state


def curate(cfg: CurateConfig, *, restart: bool = False, progress: bool = True) -> dict:
    """Run (or finish) the curation job; returns the shard set's ``dataset.json``."""
    from curation.ray_session import init_ray

    cfg.check_runnable()
    out = Path(cfg.output)
    chash = config_hash(cfg)
    if (out / DATASET_JSON).is_file() and not restart:
        doc = read_dataset_json(out)
        if doc.get("config_hash") == chash:
            if not (out / "report.html").is_file():
                _write_report(out)
            log.info("%s is already complete (same config); nothing to do", out)
            return doc
        raise RuntimeError(
            f"{out} already holds a shard set built with another config; "
            "choose a new output or pass --restart to rebuild it"
        )
    work_root = out / "_work"
    if restart:
        for sub in (
            DATASET_JSON,
            "shards",
            "ledger",
            "embeddings",
            "clusters",
            "stats.json",
            "report.html",
            "_work",
        ):
            p = out / sub
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    parts = prepare_plan(work_root / "plan.json", partial(list_partitions, cfg.input), chash)
    log.info("%d partitions of up to %d inputs", len(parts), cfg.input.partition_size)
    passes = build_passes(cfg)
    drops = Drops(work_root / "drops")
    state_path = work_root / "global.json"
    state = json.loads(state_path.read_text()) if state_path.is_file() else {}
    base = last = WorkDir(work_root / passes[0].name)
    started = init_ray(cfg.ray.address, cfg.ray.num_cpus, cfg.ray.object_store_mb, cfg.log_level)
    try:
        run_partitions(
            base, parts, partial(load_partition, cfg=cfg.input), passes[0].stages, progress=progress
        )

        def keep_top(column: str, fraction: float):
            def run() -> dict:
                t = top_fraction(last, base, drops, parts, column, fraction, column)
                return {} if t is None else {"thresholds": {column: [t]}}

            return run

        if cfg.aesthetic.enabled and cfg.aesthetic.keep_top_fraction:
            state = _global_step(
                state_path,
                state,
                "aesthetic_top",
                keep_top("aesthetic", cfg.aesthetic.keep_top_fraction),
            )
        for p in passes[1:]:
            work = WorkDir(work_root / p.name)
            run_partitions(
                work,
                parts,
                LoadPrevious(last, base, drops),
                p.stages,
                progress=progress,
                drop_columns=FIRST_PASS_ONLY,
            )
            last = work
        if cfg.similarity.enabled and cfg.similarity.keep_top_fraction:
            state = _global_step(
                state_path,
                state,
                "clip_sim_top",
                keep_top("clip_sim", cfg.similarity.keep_top_fraction),
            )
        if cfg.cluster.enabled:
            from curation.balance import cluster_and_balance

            state = _global_step(
                state_path,
                state,
                "cluster",
                lambda: {
                    "clusters": cluster_and_balance(
                        last, base, drops, parts, cfg.cluster, out, work_root, progress
                    )
                },
            )
    finally:
        if started:
            import ray

            ray.shutdown()
    doc = finalize(
        cfg, work_root, parts, last, base, drops, [p.name for p in passes], state, time.time() - t0
    )
    if not cfg.keep_work:
        shutil.rmtree(work_root, ignore_errors=True)
    log.info("wrote %d samples in %d shards to %s", doc["samples"], len(doc["shards"]), out)
    return doc
