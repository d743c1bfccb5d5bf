"""The driver's own cost, 10k vs 100k inputs: peak RSS and CPU seconds (target <= 1.1x each).

The driver of a job plans partitions and assembles metadata; it never holds image bytes
(DESIGN §3), so its memory and CPU should not grow with the pool. For each size, a folder pool of
small JPEGs (``pools.write_pool``, ``--side`` px: the bytes do not matter here, their count does)
goes through the first stage as ``vl3data curate`` in a subprocess (``--cpus`` local worker
processes, which ``ray.executor: auto`` picks for a job with no model stage; partitions of
``--partition-size``). Measured on that process alone, not its children (its workers): the
peak resident set (``VmHWM`` of
/proc/PID/status, sampled every 0.1 s while it runs) and its user + system CPU seconds (psutil,
read once it has exited but before it is reaped, so nothing it spent is missed).

Both pools are written first; then ``--repeat`` rounds run each size once (into a fresh output
folder), taking turns, and the medians are compared: one run's CPU seconds moved by 0.1-0.3 s
from run to run on a 2-core box, and the box's speed drifts over minutes, by more than the
growth being measured.

    .venv/bin/python bench/bench_driver.py [--sizes 10000 100000] [--side 64] [--repeat 3]
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
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).parent))
from common import count_tar_images, curate_cmd, loadavg, run_timed
from pools import write_pool


class DriverWatch:
    """Peak RSS and final CPU seconds of one process (not its children)."""

    def __init__(self) -> None:
        self.hwm_kb = 0
        self.rss_max = 0
        self.cpu_s = 0.0
        self.at_max: dict[str, int] = {}  # RssAnon / RssFile / RssShmem (kB) at the largest RSS

    def __call__(self, pid: int) -> None:
        try:
            status = dict(
                line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
            )
            if "VmHWM" in status:  # the kernel's own high-water mark (gone once it exits)
                self.hwm_kb = max(self.hwm_kb, int(status["VmHWM"].split()[0]))
                rss = int(status["VmRSS"].split()[0])
                if rss >= self.at_max.get("VmRSS", 0):
                    self.at_max = {
                        k: int(status[k].split()[0])
                        for k in ("VmRSS", "RssAnon", "RssFile", "RssShmem")
                        if k in status
                    }
            p = psutil.Process(pid)
            t = p.cpu_times()  # a zombie still reports its final times
            self.cpu_s = max(self.cpu_s, t.user + t.system)
            if p.status() != psutil.STATUS_ZOMBIE:
                self.rss_max = max(self.rss_max, p.memory_info().rss)
        except (psutil.Error, OSError):
            pass


def measure(pool: Path, out: Path, partition_size: int, cpus: int) -> dict:
    watch = DriverWatch()
    cmd = curate_cmd(
        [
            f"input.path={pool}",
            f"output={out}",
            f"input.partition_size={partition_size}",
            f"ray.num_cpus={cpus}",
            # small images are the point (writing 100k must be quick); keep them all
            "filters.min_side=8",
        ]
    )
    r = run_timed(cmd, watch=watch, interval=0.1)
    stats = json.loads((out / "stats.json").read_text())
    return {
        "driver_peak_rss_mb": round(max(watch.hwm_kb * 1024, watch.rss_max) / 2**20, 1),
        "driver_cpu_s": round(watch.cpu_s, 2),
        "driver_rss_parts_mb": {k: round(v / 1024, 1) for k, v in watch.at_max.items()},
        "wall_s": round(r["wall_s"], 1),
        "ray_start_s": stats["ray_start_s"],
        "partitions": stats["partitions"],
        "inputs": stats["inputs"],
        "kept": stats["kept"],
        "dropped": stats["dropped"],  # a few crops of small images are thinner than 1:3
        "images_in_tars": count_tar_images(out / "shards"),
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs=2, default=[10000, 100000], metavar=("SMALL", "BIG"))
    ap.add_argument("--side", type=int, default=64, help="long edge of the pool's JPEGs")
    ap.add_argument("--partition-size", type=int, default=1000)
    ap.add_argument("--cpus", type=int, default=2, help="the job's worker CPUs")
    ap.add_argument("--repeat", type=int, default=3, help="runs per size; medians are compared")
    args = ap.parse_args(argv)
    small, big = sorted(args.sizes)
    runs: dict[int, list[dict]] = {small: [], big: []}
    with tempfile.TemporaryDirectory(prefix="bench_driver_") as tmp_s:
        tmp = Path(tmp_s)
        pools = {}
        for n in (small, big):
            t0 = time.perf_counter()
            pools[n] = write_pool(tmp / f"pool{n}", n, side=args.side)
            print(f"{n} inputs ({args.side} px) written in {time.perf_counter() - t0:.0f} s")
        load0 = loadavg()
        # the sizes take turns (the order flips every round), so a box that speeds up or slows
        # down over minutes moves both sides alike
        for i in range(args.repeat):
            for n in (small, big) if i % 2 == 0 else (big, small):
                out = tmp / f"out{n}"
                shutil.rmtree(out, ignore_errors=True)
                r = measure(pools[n], out, args.partition_size, args.cpus)
                if r["inputs"] != n or r["kept"] != r["images_in_tars"]:
                    raise SystemExit(f"{n} inputs: {r}")
                runs[n].append(r)
                print(
                    f"round {i + 1}, {n} inputs, {r['partitions']} partitions: driver peak RSS "
                    f"{r['driver_peak_rss_mb']} MB, driver CPU {r['driver_cpu_s']} s; "
                    f"job {r['wall_s']} s"
                )
        loads = {"before": load0, "after": loadavg()}
    results = {
        n: {
            **rs[0],
            "driver_peak_rss_mb": statistics.median(r["driver_peak_rss_mb"] for r in rs),
            "driver_cpu_s": statistics.median(r["driver_cpu_s"] for r in rs),
            "wall_s": statistics.median(r["wall_s"] for r in rs),
            "runs": [
                {k: r[k] for k in ("driver_peak_rss_mb", "driver_cpu_s", "wall_s")} for r in rs
            ],
        }
        for n, rs in runs.items()
    }
    round_ratios = [
        round(b["driver_cpu_s"] / a["driver_cpu_s"], 3)
        for a, b in zip(runs[small], runs[big], strict=True)
    ]
    s, b = results[small], results[big]
    res = {
        "bench": "driver",
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "side": args.side,
        "partition_size": args.partition_size,
        "job_cpus": args.cpus,
        "repeat": args.repeat,
        "sizes": [small, big],
        "results": results,
        "loadavg": loads,
        "rss_ratio": round(b["driver_peak_rss_mb"] / s["driver_peak_rss_mb"], 3),
        "cpu_ratio": round(b["driver_cpu_s"] / s["driver_cpu_s"], 3),
        "cpu_ratio_by_round": round_ratios,
    }
    print(
        f"driver {big} vs {small} inputs: peak RSS {res['rss_ratio']}x "
        f"({s['driver_peak_rss_mb']} -> {b['driver_peak_rss_mb']} MB), CPU {res['cpu_ratio']}x "
        f"({s['driver_cpu_s']} -> {b['driver_cpu_s']} s), medians of {args.repeat} rounds "
        f"(CPU by round: {round_ratios}; target <= 1.1x each)"
    )
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
