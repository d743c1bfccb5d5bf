"""The ``recaption`` job: a curated shard set in; VL3-Syn7M-short and -detailed out.

    OUT/_work/{short,detailed}/   captioned pieces per partition, done markers (resume)
    OUT/short/, OUT/detailed/     shards/, ledger/, stats.json, report.html, dataset.json

Each subset is one pass of the curation runner (Ray Data; the engine as an actor pool), so the
short and detailed models can have different hardware, and a killed run resumes at the first
unfinished partition of the pass it was in. The final write goes through the pieces in
(partition, row) order: the same inputs and config give the same shards.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
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
from manifests.configs import RUN_FIELDS, config_hash
from manifests.dataset import DATASET_JSON, read_dataset_json, write_dataset_json
from manifests.schema import ERROR, KEPT, STATUSES
from manifests.shards import ShardSetWriter, tar_samples
from recaption.config import RecaptionConfig
from recaption.stage import CaptionStage

log = logging.getLogger(__name__)

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
#: fields of the curated record that are about the image, carried into the new record
NOT_CARRIED = {"image", "conversations", "key"}


def recaption_hash(cfg: RecaptionConfig) -> str:
    """What decides the captions: where and how fast an engine runs does not."""
    cfg = copy.deepcopy(cfg)
    for kind in ("short", "detailed"):
        e = getattr(cfg, kind).engine
        e.concurrency, e.num_gpus, e.timeout_s, e.max_retries = 1, 0, 0.0, 0
        e.base_url, e.api_key = "", ""
    return config_hash(cfg, (*RUN_FIELDS, "plan_images"))


def list_image_partitions(cfg: RecaptionConfig) -> list[Partition]:
    """Slices of the input's shards, ``partition_size`` samples each, in shard order."""
    src = Path(cfg.input.path)
    doc = read_dataset_json(src)
    parts, size = [], cfg.input.partition_size
    for shard in doc["shards"]:
        for skip in range(0, shard["samples"], size):
            spec = {
                "shard": shard["path"],
                "skip": skip,
                "take": min(size, shard["samples"] - skip),
            }
            parts.append(Partition(len(parts), "shard_slice", spec))
    return parts


def load_image_partition(part: Partition, root: str) -> pa.Table:
    """The images of one slice, as ledger rows (id = the curated sample's key)."""
    spec = part.spec
    rows: dict[str, list] = {k: [] for k in ("id", "source_key", "image", "ext", "text", "meta")}
    status, reason = [], []
    lo, hi = spec["skip"], spec["skip"] + spec["take"]

    def keep(ordinal: int, _key: str) -> bool | None:  # earlier samples' data is seeked past
        return None if ordinal >= hi else ordinal >= lo

    for sample in tar_samples(str(Path(root) / spec["shard"]), keep):
        key = sample["__key__"]
        ext = next((e for e in IMAGE_EXTS if e in sample), None)
        try:
            rec = json.loads(sample["json"]) if "json" in sample else {}
        except ValueError:
            rec = {}
        conv = rec.get("conversations") or []
        rows["id"].append(key)
        rows["source_key"].append(f"{spec['shard']}#{key}")
        rows["image"].append(sample[ext] if ext else None)
        rows["ext"].append(ext)
        rows["text"].append(conv[1]["value"] if len(conv) > 1 else None)
        rows["meta"].append(json.dumps({k: v for k, v in rec.items() if k not in NOT_CARRIED}))
        status.append(KEPT if ext else ERROR)
        reason.append(None if ext else "no_image")
    n = len(rows["id"])
    return pa.table(
        {
            "id": pa.array(rows["id"], pa.string()),
            "source": pa.array([f"recaption:{Path(root).name}"] * n, pa.string()),
            "source_key": pa.array(rows["source_key"], pa.string()),
            "partition": pa.array([part.index] * n, pa.int32()),
            "row": pa.array(range(n), pa.int32()),
            "status": pa.array(status, pa.string()),
            "stage": pa.array([None if r is None else "load" for r in reason], pa.string()),
            "reason": pa.array(reason, pa.string()),
            "image": pa.array(rows["image"], pa.binary()),
            "ext": pa.array(rows["ext"], pa.string()),
            "text": pa.array(rows["text"], pa.string()),
            "meta": pa.array(rows["meta"], pa.string()),
        }
    )


def training_record(row: dict, kind: str, model: str) -> dict:
    """DESIGN §5: the caption answers a rotated instruction; the curated scores ride along."""
    key, ext = row["id"], row["ext"]
    rec = {
        "key": key,
        "image": [f"{key}.{ext}"],
        "conversations": [
            {"from": "human", "value": "<image>\n" + row["instruction"]},
            {"from": "gpt", "value": row["caption"]},
        ],
        "subset": kind,
        "caption_model": model,
    }
    if row.get("meta"):
        curated = json.loads(row["meta"])
        rec["curated"] = curated
        for k in ("width", "height"):  # image size, as every image record carries it
            if k in curated:
                rec[k] = curated[k]
    return rec


def finalize_subset(cfg: RecaptionConfig, kind: str, work: WorkDir, parts, wall_s: float) -> dict:
    out = Path(cfg.output) / kind
    for sub in ("shards", "ledger"):
        shutil.rmtree(out / sub, ignore_errors=True)
    writer = ShardSetWriter(out, kind, cfg.shards.max_count, cfg.shards.max_bytes)
    counts: Counter = Counter(dict.fromkeys(STATUSES, 0))
    reasons: Counter = Counter()
    attempts: Counter = Counter()
    tokens = {"prompt": 0, "output": 0}
    gen_s = 0.0
    model = getattr(cfg, kind).engine.model
    for part in parts:
        rows = work.read_partition(part.index)
        if rows is None:
            continue
        # the pieces leave the image bytes in the input shards: read them back, in row order
        images = load_image_partition(part, cfg.input.path)["image"].to_pylist()
        shards, keys = [], []
        for row in rows.to_pylist():
            row["image"] = images[row["row"]]
            counts[row["status"]] += 1
            if row["reason"]:
                reasons[row["reason"]] += 1
            if row["attempts"]:
                attempts[row["attempts"]] += 1
                tokens["prompt"] += row["prompt_tokens"] or 0
                tokens["output"] += row["output_tokens"] or 0
                gen_s += row["gen_s"] or 0.0
            if row["status"] != KEPT:
                shards.append(None)
                keys.append(None)
                continue
            rec = training_record(row, kind, model)
            sample = {
                "__key__": row["id"],
                row["ext"]: row["image"],
                "json": json.dumps(rec).encode(),
            }
            shards.append(writer.write(sample))
            keys.append(row["id"])
        rows = rows.append_column("shard", pa.array(shards, pa.string()))
        rows = rows.append_column("key", pa.array(keys, pa.string()))
        rows = rows.append_column(
            "words", pa.array([len((c or "").split()) or None for c in rows["caption"].to_pylist()])
        )
        ledger.write_part(out, part.index, rows)
    shard_list = writer.close()
    captioned = sum(attempts.values())
    stats = {
        "subset": kind,
        "model": model,
        "engine": getattr(cfg, kind).engine.kind,
        "inputs": sum(counts.values()),
        **counts,
        "reasons": dict(reasons),
        "attempts": {str(k): v for k, v in sorted(attempts.items())},
        "tokens": tokens,
        "generation_s": round(gen_s, 3),
        # time inside the engine, summed over workers: the rates are per worker
        "per_worker": {
            "images_per_s": round(captioned / gen_s, 3) if gen_s else None,
            "prompt_tokens_per_s": round(tokens["prompt"] / gen_s, 1) if gen_s else None,
            "output_tokens_per_s": round(tokens["output"] / gen_s, 1) if gen_s else None,
        },
        "wall_s": round(wall_s, 3),
        "partitions": len(parts),
    }
    write_json(out / "stats.json", stats)
    doc = write_dataset_json(
        out,
        name=f"{cfg.name}-{kind}",
        modality="image",
        task=f"caption_{kind}",
        shards=shard_list,
        config=dataclasses.asdict(cfg),
        config_hash=recaption_hash(cfg),
        extra={"inputs": stats["inputs"], "ledger_parts": len(parts)},
    )
    from recaption.report import write_recaption_report

    write_recaption_report(out)
    return doc


def run_recaption(cfg: RecaptionConfig, *, restart: bool = False, progress: bool = True) -> dict:
    """Run (or finish) the job; returns ``{subset: dataset.json}``."""
    from curation.ray_session import init_ray

    cfg.check_runnable()
    out = Path(cfg.output)
    chash = recaption_hash(cfg)
    kinds = cfg.subsets()
    if restart:
        for sub in (*kinds, "_work"):
            shutil.rmtree(out / sub, ignore_errors=True)
    if all((out / k / DATASET_JSON).is_file() for k in kinds):
        docs = {k: read_dataset_json(out / k) for k in kinds}
        if all(d.get("config_hash") == chash for d in docs.values()):
            log.info("%s is already complete (same config); nothing to do", out)
            return docs
        raise RuntimeError(
            f"{out} already holds caption sets built with another config; "
            "choose a new output or pass --restart to rebuild them"
        )
    out.mkdir(parents=True, exist_ok=True)
    parts = prepare_plan(out / "_work" / "plan.json", partial(list_image_partitions, cfg), chash)
    log.info("%d partitions of up to %d images", len(parts), cfg.input.partition_size)
    load = partial(load_image_partition, root=cfg.input.path)
    docs = {}
    started = init_ray(cfg.ray.address, cfg.ray.num_cpus, cfg.ray.object_store_mb, cfg.log_level)
    try:
        for kind in kinds:
            if (out / kind / DATASET_JSON).is_file():
                docs[kind] = read_dataset_json(out / kind)
                continue
            t0 = time.time()
            work = WorkDir(out / "_work" / kind)
            stage = CaptionStage(kind, getattr(cfg, kind), cfg.prompts)
            run_partitions(work, parts, load, [stage], progress=progress, drop_columns=("image",))
            docs[kind] = None, work, time.time() - t0
    finally:
        if started:
            import ray

            ray.shutdown()
    for kind in kinds:
        if isinstance(docs[kind], tuple):
            _, work, wall = docs[kind]
            docs[kind] = finalize_subset(cfg, kind, work, parts, wall)
            log.info(
                "%s: %d samples in %d shards",
                kind,
                docs[kind]["samples"],
                len(docs[kind]["shards"]),
            )
    if not cfg.keep_work:
        shutil.rmtree(out / "_work", ignore_errors=True)
    return docs
