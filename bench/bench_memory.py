"""Peak memory of a whole curate run for 1k vs 10k inputs: it must stay flat (target <= 1.25x).

Runs ``vl3data curate`` in a subprocess on each pool and samples the proportional set size (PSS,
so Ray's shared object store is not counted once per process) of the whole process tree: the
driver, the embedded Ray's daemons and its workers.

    .venv/bin/python bench/bench_memory.py [--sizes 1000 10000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).parent))
from common import curate_cmd, loadavg, run_timed
from pools import write_pool


def tree_pss(root: psutil.Process) -> int:
    total = 0
    for p in [root, *root.children(recursive=True)]:
        try:
            total += p.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total


def run_and_measure(pool: Path, out: Path) -> dict:
    cmd = curate_cmd(
        [
            f"input.path={pool}",
            f"output={out}",
            "input.partition_size=256",
            "decode.thumbs_per_reason=0",
            "ray.num_cpus=2",
        ]
    )
    peak = [0]

    def sample(pid: int) -> None:
        with contextlib.suppress(psutil.Error):  # gone, or a zombie (memory released)
            peak[0] = max(peak[0], tree_pss(psutil.Process(pid)))

    r = run_timed(cmd, watch=sample, interval=0.25)
    return {"peak_pss_mb": round(peak[0] / 2**20, 1), "wall_s": round(r["wall_s"], 1)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    args = ap.parse_args(argv)
    results = {}
    load0 = loadavg()
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            pool = write_pool(Path(tmp) / f"pool{n}", n)
            results[n] = run_and_measure(pool, Path(tmp) / f"out{n}")
            print(f"{n} inputs: peak PSS {results[n]['peak_pss_mb']} MB, {results[n]['wall_s']} s")
    sizes = sorted(results)
    ratio = results[sizes[-1]]["peak_pss_mb"] / results[sizes[0]]["peak_pss_mb"]
    print(f"peak memory {sizes[-1]} vs {sizes[0]} inputs: {ratio:.2f}x (target <= 1.25x)")
    res = {
        "bench": "memory",
        "results": results,
        "ratio": round(ratio, 2),
        "loadavg_before": load0,
        "loadavg_after": loadavg(),
    }
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
