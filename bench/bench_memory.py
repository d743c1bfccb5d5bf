"""Peak memory of a whole curate run for 1k vs 10k inputs: it must stay flat (target <= 1.25x).

Runs ``vl3data curate`` in a subprocess on each pool and samples the proportional set size (PSS,
so Ray's shared object store is not counted once per process) of the whole process tree: the
driver, the embedded Ray's daemons and its workers.

    .venv/bin/python bench/bench_memory.py [--sizes 1000 10000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).parent))
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
    cmd = [
        sys.executable,
        "-m",
        "vl3data.cli",
        "curate",
        "configs/curate_local.yaml",
        "--set",
        f"input.path={pool}",
        "--set",
        f"output={out}",
        "--set",
        "input.partition_size=256",
        "--set",
        "decode.thumbs_per_reason=0",
        "--set",
        "ray.num_cpus=2",
        "--no-progress",
        "--log-level",
        "WARNING",
    ]
    t0 = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ps = psutil.Process(proc.pid)
    peak = [0]

    def sample() -> None:
        while proc.poll() is None:
            try:
                peak[0] = max(peak[0], tree_pss(ps))
            except psutil.NoSuchProcess:
                break
            time.sleep(0.25)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    _, err = proc.communicate()
    t.join()
    if proc.returncode != 0:
        raise RuntimeError(err.decode()[-2000:])
    return {"peak_pss_mb": round(peak[0] / 2**20, 1), "wall_s": round(time.time() - t0, 1)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    args = ap.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            pool = write_pool(Path(tmp) / f"pool{n}", n)
            results[n] = run_and_measure(pool, Path(tmp) / f"out{n}")
            print(f"{n} inputs: peak PSS {results[n]['peak_pss_mb']} MB, {results[n]['wall_s']} s")
    sizes = sorted(results)
    ratio = results[sizes[-1]]["peak_pss_mb"] / results[sizes[0]]["peak_pss_mb"]
    print(f"peak memory {sizes[-1]} vs {sizes[0]} inputs: {ratio:.2f}x (target <= 1.25x)")
    print(json.dumps({"bench": "memory", "results": results, "ratio": round(ratio, 2)}))
    return results


if __name__ == "__main__":
    main()
