"""What the Ray runner costs per image over a plain loop calling the same stage functions.

Same pool, same stages (``curation.pipeline.build_stages``), same partitions. The plain loop
loads each partition and calls the stages in turn in this process; the runner maps them with
Ray Data (embedded Ray, started before timing; its start-up is reported apart) and writes the
scored pieces that make runs resumable. Neither writes shards: this isolates the runner.

    .venv/bin/python bench/bench_runner.py [--inputs 2000] [--partition-size 250]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from pools import write_pool

from curation.config import CurateConfig
from curation.pipeline import build_stages
from curation.runner import WorkDir, run_partitions
from curation.sources import list_partitions, load_partition
from manifests.atomic import write_parquet
from manifests.configs import load_config


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--inputs", type=int, default=2000)
    ap.add_argument("--partition-size", type=int, default=250)
    args = ap.parse_args(argv)
    import ray

    with tempfile.TemporaryDirectory() as tmp:
        pool = write_pool(Path(tmp) / "pool", args.inputs)
        cfg = load_config(
            CurateConfig,
            "configs/curate_local.yaml",
            [
                f"input.path={pool}",
                f"output={tmp}/out",
                f"input.partition_size={args.partition_size}",
                "decode.thumbs_per_reason=0",
            ],
        )
        parts = list_partitions(cfg.input)
        stages = build_stages(cfg)

        t0 = time.perf_counter()
        for part in parts:
            batch = load_partition(part, cfg.input)
            for stage in stages:
                batch = stage(batch)
        plain = time.perf_counter() - t0

        # the same loop, also writing each partition's scored rows as the runner does
        t0 = time.perf_counter()
        for part in parts:
            batch = load_partition(part, cfg.input)
            for stage in stages:
                batch = stage(batch)
            write_parquet(Path(tmp) / "plain" / f"p{part.index:06d}.parquet", batch)
        plain_write = time.perf_counter() - t0

        t0 = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        startup = time.perf_counter() - t0
        t0 = time.perf_counter()
        run_partitions(
            WorkDir(Path(tmp) / "work"),
            parts,
            partial(load_partition, cfg=cfg.input),
            stages,
            progress=False,
        )
        on_ray = time.perf_counter() - t0
        ray.shutdown()
    n = args.inputs
    res = {
        "inputs": n,
        "plain_loop_ms_per_image": round(plain / n * 1e3, 3),
        "plain_loop_with_writes_ms_per_image": round(plain_write / n * 1e3, 3),
        "ray_runner_ms_per_image": round(on_ray / n * 1e3, 3),
        "overhead_ms_per_image": round((on_ray - plain) / n * 1e3, 3),
        "ray_over_plain": round(on_ray / plain, 2),
        "ray_startup_s": round(startup, 1),
    }
    print(
        f"{n} images: plain loop {res['plain_loop_ms_per_image']} ms/img (1 core; "
        f"{res['plain_loop_with_writes_ms_per_image']} with writes), Ray runner "
        f"{res['ray_runner_ms_per_image']} ms/img (2 cores) -> {res['ray_over_plain']}x wall; "
        f"Ray start-up {res['ray_startup_s']} s"
    )
    print(json.dumps({"bench": "runner", **res}))
    return res


if __name__ == "__main__":
    main()
