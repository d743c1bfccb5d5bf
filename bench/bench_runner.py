"""The first stage as a whole ``vl3data curate`` job on 2 CPUs vs a plain one-core loop.

One folder of ``--inputs`` JPEGs (``pools.write_pool``: crops of the real sample photos,
``--side`` px on the long edge), one config (``configs/curate_local.yaml`` with the same
``--set`` overrides on both sides), the same partitions, the same stages
(``curation.pipeline.first_stage``: probe, shape filter, decode/verify) and the same sink
(``curation.write.CuratedShards``: each partition's tars and ledger part), so both do the same
work. ``--repeat`` rounds, each running both sides one after the other; medians reported.

- plain: ``--plain OUT`` of this script as a process of its own, one core, no Ray: for each
  partition ``load_partition``, then its rows in chunks of ``engine.runner.CHUNK_ROWS`` through
  the stages into the sink. Timed as a whole process, and its loop alone (imports excluded).
- job: ``vl3data curate`` as a subprocess on ``--cpus`` CPUs, timed as a whole process
  (imports, plan, the workers' start, the pass, stats.json, dataset.json, report.html, the
  workers' stop). ``--executor`` is ``ray.executor``: ``auto`` (the default: this job has no
  model stage, so it runs on local processes, ``engine.local_pool``) or ``ray`` (an embedded
  Ray, started in the background while the driver plans). Its ``stats.json: passes_s`` gives
  the pass's parallel phase apart (``processes`` or ``ray``: from the first partition
  submitted to the last one done, the workers' start-up apart, cold workers included).

Ratios: whole process / whole process, and the job's parallel phase / the plain loop (the
ideal on 2 CPUs is 2x). Both outputs are checked to hold every input image (the tars are read).

    .venv/bin/python bench/bench_runner.py [--inputs 12000] [--side 640] [--partition-size 500]
        [--executor auto|ray|processes]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
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


def plain_process(config_args: list[str], out: Path) -> dict:
    """The plain loop as a whole process of its own: wall clock, and its loop alone."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--plain", str(out), *config_args]
    run = run_timed(cmd)
    inner = json.loads(run["stdout"].strip().splitlines()[-1])
    return {"whole_s": run["wall_s"], **inner}


def job_process(common: list[str], out: Path) -> dict:
    run = run_timed(curate_cmd([*common, f"output={out}"], CONFIG))
    stats = json.loads((out / "stats.json").read_text())
    return {"whole_s": run["wall_s"], "stats": stats, "pass": stats["passes_s"]["write"]}


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inputs", type=int, default=12000)
    ap.add_argument("--side", type=int, default=640, help="long edge of the pool's JPEGs")
    ap.add_argument("--partition-size", type=int, default=500)
    ap.add_argument("--cpus", type=int, default=2, help="the job's CPUs (ray.num_cpus)")
    ap.add_argument("--executor", default="auto", help="ray.executor: auto, ray or processes")
    ap.add_argument("--repeat", type=int, default=3, help="rounds of both sides; medians")
    ap.add_argument("--plain", metavar="OUT", help=argparse.SUPPRESS)  # the plain side's process
    ap.add_argument("--pool", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.plain:
        common = [f"input.path={args.pool}", f"input.partition_size={args.partition_size}"]
        cfg = load_config(CurateConfig, str(ROOT / CONFIG), [*common, f"output={args.plain}"])
        loop_s, timings = plain_loop(cfg)
        print(json.dumps({"loop_s": loop_s, "timings_s": timings}))
        return {}

    with tempfile.TemporaryDirectory(prefix="bench_runner_") as tmp_s:
        tmp = Path(tmp_s)
        t0 = time.perf_counter()
        pool = write_pool(tmp / "pool", args.inputs, side=args.side)
        print(f"wrote {args.inputs} JPEGs ({args.side} px) in {time.perf_counter() - t0:.0f} s")
        common = [f"input.path={pool}", f"input.partition_size={args.partition_size}"]
        plain_args = ["--pool", str(pool), "--partition-size", str(args.partition_size)]
        load0 = loadavg()
        plains, jobs = [], []
        for r in range(args.repeat):
            plains.append(plain_process(plain_args, tmp / f"plain{r}"))
            plain_images = count_tar_images(tmp / f"plain{r}" / "shards")
            shutil.rmtree(tmp / f"plain{r}")
            sets = [*common, f"ray.num_cpus={args.cpus}", f"ray.executor={args.executor}"]
            jobs.append(job_process(sets, tmp / f"job{r}"))
            job_images = count_tar_images(tmp / f"job{r}" / "shards")
            shutil.rmtree(tmp / f"job{r}")
            if not plain_images == job_images == jobs[-1]["stats"]["kept"] == args.inputs:
                raise SystemExit(f"incomplete: plain {plain_images}, job {job_images}")
        load1 = loadavg()
    n = args.inputs
    phases = [j["pass"].get("phases", {}) for j in jobs]
    ray_rates = [
        p[k]["rows"] / p[k]["seconds"] for p in phases for k in ("ray", "processes") if k in p
    ]
    loop_rate = median([n / p["loop_s"] for p in plains])
    res = {
        "bench": "runner",
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "inputs": n,
        "side": args.side,
        "partition_size": args.partition_size,
        "job_cpus": args.cpus,
        "executor": args.executor,
        "repeat": args.repeat,
        "loadavg_before": load0,
        "loadavg_after": load1,
        "plain_whole_s": [round(p["whole_s"], 2) for p in plains],
        "plain_loop_s": [round(p["loop_s"], 2) for p in plains],
        "plain_img_per_s": round(loop_rate, 1),
        "plain_whole_img_per_s": round(median([n / p["whole_s"] for p in plains]), 1),
        "job_whole_s": [round(j["whole_s"], 2) for j in jobs],
        "job_img_per_s": round(median([n / j["whole_s"] for j in jobs]), 1),
        "job_ray_start_s": [j["stats"]["ray_start_s"] for j in jobs],
        "job_phases": phases,
        "job_ray_img_per_s": round(median(ray_rates), 1) if ray_rates else None,
        "ratio_whole": round(
            median([p["whole_s"] for p in plains]) / median([j["whole_s"] for j in jobs]), 3
        ),
        "ratio_ray_phase": round(median(ray_rates) / loop_rate, 3) if ray_rates else None,
        "plain_timings_s": {k: round(v, 2) for k, v in plains[-1]["timings_s"].items()},
        "job_timings_s": {k: round(v, 2) for k, v in jobs[-1]["stats"]["timings_s"].items()},
        "images": n,
    }
    driver = [p["driver"]["rows"] for p in phases if "driver" in p]
    print(
        f"{n} JPEGs ({args.side} px), partitions of {args.partition_size}, median of "
        f"{args.repeat}: plain loop (1 core) {res['plain_img_per_s']} img/s, as a whole process "
        f"{res['plain_whole_img_per_s']} | vl3data curate ({args.cpus} CPUs) whole process "
        f"{res['job_img_per_s']} img/s -> {res['ratio_whole']}x; parallel phase "
        f"({'/'.join(sorted({k for p in phases for k in p}))}, start-up apart) "
        f"{res['job_ray_img_per_s']} img/s -> {res['ratio_ray_phase']}x; the driver ran "
        f"{driver} images while Ray started; load {load0} -> {load1}"
    )
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
