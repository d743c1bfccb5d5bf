"""``vl3data recaption --plan``: how long captioning this input will take, from rates measured
here and now on a few of its images with the configured engines.

The images are captioned in this process (no Ray, nothing written); the rate is per worker (one
engine instance), so worker-hours divide by the number of workers a user will run.
"""

from __future__ import annotations

import time
from pathlib import Path

from engine.partitions import Partition
from manifests.dataset import read_dataset_json
from recaption.config import RecaptionConfig
from recaption.job import load_image_partition
from recaption.stage import CaptionStage


def calibration_images(cfg: RecaptionConfig):
    """The first ``plan_images`` images of the input, across shards."""
    doc = read_dataset_json(cfg.input.path)
    tables, need = [], cfg.plan_images
    for shard in doc["shards"]:
        if need <= 0:
            break
        take = min(need, shard["samples"])
        part = Partition(0, "shard_slice", {"shard": shard["path"], "skip": 0, "take": take})
        tables.append(load_image_partition(part, cfg.input.path))
        need -= take
    import pyarrow as pa

    return pa.concat_tables(tables), doc["samples"]


def estimate(cfg: RecaptionConfig) -> dict:
    """Per subset: measured images/s and tokens/s per worker, worker-hours per million images
    and for this input."""
    batch, total = calibration_images(cfg)
    report = {"input_images": total, "calibration_images": batch.num_rows, "subsets": {}}
    for kind in cfg.subsets():
        stage = CaptionStage(kind, getattr(cfg, kind), cfg.prompts)
        t0 = time.perf_counter()
        stage.setup()
        setup_s = time.perf_counter() - t0
        warm = batch.slice(0, 1)
        stage(warm)  # first call pays for lazy initialisation; not the steady rate
        t0 = time.perf_counter()
        out = stage(batch)
        spent = time.perf_counter() - t0
        n = sum(1 for a in out["attempts"].to_pylist() if a)
        per_img = spent / max(n, 1)
        tokens_out = sum(x or 0 for x in out["output_tokens"].to_pylist())
        tokens_in = sum(x or 0 for x in out["prompt_tokens"].to_pylist())
        report["subsets"][kind] = {
            "model": getattr(cfg, kind).engine.model,
            "engine": getattr(cfg, kind).engine.kind,
            "setup_s": round(setup_s, 2),
            "images_per_s": round(n / spent, 3) if spent else None,
            "prompt_tokens_per_s": round(tokens_in / spent, 1) if spent else None,
            "output_tokens_per_s": round(tokens_out / spent, 1) if spent else None,
            "worker_hours_per_million": round(per_img * 1e6 / 3600, 2),
            "worker_hours_this_input": round(per_img * total / 3600, 4),
        }
    return report


def format_estimate(est: dict) -> str:
    lines = [
        f"measured on {est['calibration_images']} of {est['input_images']:,} input images "
        "(per worker = one engine instance)",
        f"{'subset':10} {'engine':13} {'img/s':>8} {'out tok/s':>10} {'h per 1M img':>13} "
        f"{'h this input':>13}",
    ]
    for kind, s in est["subsets"].items():
        lines.append(
            f"{kind:10} {s['engine']:13} {s['images_per_s']:>8} {s['output_tokens_per_s']:>10} "
            f"{s['worker_hours_per_million']:>13} {s['worker_hours_this_input']:>13}"
        )
    return "\n".join(lines)


def plan_main(cfg: RecaptionConfig) -> str:
    require_input = Path(cfg.input.path) / "dataset.json"
    if not require_input.is_file():
        raise FileNotFoundError(f"{require_input} not found: --input must be a finished shard set")
    return format_estimate(estimate(cfg))
