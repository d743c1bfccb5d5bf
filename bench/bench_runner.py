"""The first stage as a whole ``vl3data curate`` job on 2 CPUs vs a plain one-core loop.

One folder of ``--inputs`` JPEGs (``pools.write_pool``: crops of the real sample photos,
``--side`` px on the long edge), one config (``configs/curate_local.yaml`` with the same
``--set`` overrides on both sides), the same partitions, the same stages
(``curation.pipeline.first_stage``: probe, shape filter, decode/verify) and the same sink
(``curation.write.CuratedShards``: each partition's tars and ledger part), so both do the same
work:

- plain: in this process, one core, no Ray: for each partition ``load_partition``, then its rows
  in chunks of ``engine.runner.CHUNK_ROWS`` through the stages into the sink;
- job: ``vl3data curate`` as a subprocess with an embedded Ray of ``--cpus`` CPUs (partition
  tasks, done markers, stats.json, dataset.json, report.html), timed as a whole process, and
  also by its own stats.json as ``wall_s - ray_start_s`` (the job without Ray's start-up).

Prints images/s each way and the ratios job / plain (the ideal on 2 CPUs is 2x); both outputs
are checked to hold every input image (the tars are read).

    .venv/bin/python bench/bench_runner.py [--inputs 12000] [--side 640] [--partition-size 500]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import ROOT, count_tar_images, curate_cmd, loadavg, run_timed
from pools import write_pool

from curation.config import CurateConfig
from curation.pipeline import first_stage
from curation.sources import list_partitions, load_partition
from curation.write import CuratedShards
from engine.runner import CHUNK_ROWS, chunks_of, stage_name
from manifests.configs import load_config

CONFIG = "configs/curate_local.yaml"


def plain_loop(cfg: CurateConfig) -> tuple[float, dict[str, float]]:
    """The first stage over every partition in this process: seconds, and seconds per step
    (load, each stage, the sink's own writing) as the job's stats.json reports them."""
    parts = list_partitions(cfg.input)
    stages = first_stage(cfg)
    sink = CuratedShards(
        Path(cfg.output),
        cfg.shards.subset,
        cfg.shards.max_count,
        cfg.shards.max_bytes,
        cfg.clip.embeddings_dtype,
    )
    timings: dict[str, float] = defaultdict(float)

    def chunks(table):
        for chunk in chunks_of(table, CHUNK_ROWS):
            for stage in stages:
                if chunk.num_rows == 0:
                    break
                t = time.perf_counter()
                chunk = stage(chunk)
                timings[stage_name(stage)] += time.perf_counter() - t
            yield chunk

    t0 = time.perf_counter()
    for part in parts:
        t = time.perf_counter()
        table = load_partition(part, cfg.input)
        timings["load"] += time.perf_counter() - t
        sink.write(part, chunks(table))
    total = time.perf_counter() - t0
    timings["sink"] = total - sum(timings.values())
    return total, dict(timings)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inputs", type=int, default=12000)
    ap.add_argument("--side", type=int, default=640, help="long edge of the pool's JPEGs")
    ap.add_argument("--partition-size", type=int, default=500)
    ap.add_argument("--cpus", type=int, default=2, help="the job's embedded Ray CPUs")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench_runner_") as tmp_s:
        tmp = Path(tmp_s)
        t0 = time.perf_counter()
        pool = write_pool(tmp / "pool", args.inputs, side=args.side)
        print(f"wrote {args.inputs} JPEGs ({args.side} px) in {time.perf_counter() - t0:.0f} s")
        common = [
            f"input.path={pool}",
            f"input.partition_size={args.partition_size}",
            f"ray.num_cpus={args.cpus}",
        ]
        load0 = loadavg()
        cfg = load_config(CurateConfig, str(ROOT / CONFIG), [*common, f"output={tmp}/plain"])
        plain_s, plain_timings = plain_loop(cfg)
        plain_images = count_tar_images(tmp / "plain" / "shards")

        job = run_timed(curate_cmd([*common, f"output={tmp}/job"], CONFIG))
        load1 = loadavg()
        stats = json.loads((tmp / "job" / "stats.json").read_text())
        job_images = count_tar_images(tmp / "job" / "shards")
    n = args.inputs
    whole_s = job["wall_s"]
    work_s = stats["wall_s"] - stats["ray_start_s"]
    res = {
        "bench": "runner",
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "inputs": n,
        "side": args.side,
        "partition_size": args.partition_size,
        "job_cpus": args.cpus,
        "loadavg_before": load0,
        "loadavg_after": load1,
        "plain_s": round(plain_s, 2),
        "plain_img_per_s": round(n / plain_s, 1),
        "job_whole_s": round(whole_s, 2),
        "job_img_per_s": round(n / whole_s, 1),
        "job_wall_s": stats["wall_s"],
        "job_ray_start_s": stats["ray_start_s"],
        "job_work_img_per_s": round(n / work_s, 1),
        "ratio": round(plain_s / whole_s, 3),
        "ratio_without_ray_start": round(plain_s / work_s, 3),
        "plain_timings_s": {k: round(v, 2) for k, v in plain_timings.items()},
        "job_timings_s": {k: round(v, 2) for k, v in stats["timings_s"].items()},
        "plain_images": plain_images,
        "job_images": job_images,
        "job_kept": stats["kept"],
    }
    if not plain_images == job_images == stats["kept"] == n:
        raise SystemExit(f"outputs incomplete: plain {plain_images}, job {job_images} of {n}")
    print(
        f"{n} JPEGs ({args.side} px), partitions of {args.partition_size}: plain loop (1 core) "
        f"{res['plain_img_per_s']} img/s | vl3data curate ({args.cpus} CPUs) "
        f"{res['job_img_per_s']} img/s as a whole process ({whole_s:.1f} s) -> {res['ratio']}x; "
        f"{res['job_work_img_per_s']} img/s without Ray start-up ({stats['ray_start_s']:.1f} s) "
        f"-> {res['ratio_without_ray_start']}x; load {load0} -> {load1}"
    )
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
