"""``vl3data import`` of LLaVA-style image records vs our own curate first stage, same images.

One folder of ``--inputs`` JPEGs (``pools.write_pool``: crops of the real sample photos,
``--side`` px on the long edge) and a LLaVA-style JSONL naming each of them once
(``{"image": "...", "conversations": [...]}``). Both sides run as whole ``vl3data`` processes
with an embedded Ray of ``--cpus`` CPUs and the same partition size:

- curate: ``vl3data curate configs/curate_local.yaml`` over the folder (the first stage alone:
  probe, shape filter opened wide so that it keeps every image as the import does,
  decode/verify, shards);
- import: ``vl3data import configs/import_llava.yaml`` over the JSONL and the same folder
  (parse and check each record, read the image inside the media root, curation's probe and
  decode, shards).

Prints images/s each way (whole process, and without Ray's start-up from each stats.json) and
the ratio import / curate; the issue's target is >= 0.9x at 20,000 images (the import adds no
more than parsing). Both outputs are checked to hold every image.

    .venv/bin/python bench/bench_import.py [--inputs 20000] [--side 640] [--partition-size 1000]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import count_tar_images, curate_cmd, loadavg, run_timed
from pools import write_pool


def import_cmd(overrides: list[str], log_level: str = "WARNING") -> list[str]:
    cmd = [sys.executable, "-m", "vl3data.cli", "import", "configs/import_llava.yaml"]
    for o in overrides:
        cmd += ["--set", o]
    return [*cmd, "--no-progress", "--log-level", log_level]


def write_annotations(pool: Path, path: Path) -> int:
    """A LLaVA-Pretrain-style JSONL: one record per image of ``pool``, as its paths give."""
    images = sorted(p.relative_to(pool).as_posix() for p in pool.rglob("*.jpg"))
    with open(path, "w") as f:
        for i, rel in enumerate(images):
            rec = {
                "id": f"{i:09d}",
                "image": rel,
                "conversations": [
                    {"from": "human", "value": "<image>\nWrite a terse but informative summary."},
                    {"from": "gpt", "value": f"a photo, crop number {i}"},
                ],
            }
            f.write(json.dumps(rec) + "\n")
    return len(images)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inputs", type=int, default=20000)
    ap.add_argument("--side", type=int, default=640, help="long edge of the pool's JPEGs")
    ap.add_argument("--partition-size", type=int, default=1000)
    ap.add_argument("--cpus", type=int, default=2, help="each job's embedded Ray CPUs")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench_import_") as tmp_s:
        tmp = Path(tmp_s)
        t0 = time.perf_counter()
        pool = write_pool(tmp / "pool", args.inputs, side=args.side)
        n = write_annotations(pool, tmp / "llava.jsonl")
        print(f"wrote {n} JPEGs ({args.side} px) in {time.perf_counter() - t0:.0f} s")
        common = [f"input.partition_size={args.partition_size}", f"ray.num_cpus={args.cpus}"]
        load0 = loadavg()
        # the shape filter opened wide: an import keeps every shape, so both keep every image
        wide = ["filters.min_side=1", "filters.min_aspect=0.001", "filters.max_aspect=1000"]
        curate = run_timed(
            curate_cmd([*common, *wide, f"input.path={pool}", f"output={tmp}/curate"])
        )
        imp = run_timed(
            import_cmd(
                [
                    *common,
                    f"input.annotations={tmp}/llava.jsonl",
                    f"input.media={pool}",
                    f"output={tmp}/import",
                ]
            )
        )
        load1 = loadavg()
        c_stats = json.loads((tmp / "curate" / "stats.json").read_text())
        i_stats = json.loads((tmp / "import" / "image" / "stats.json").read_text())
        c_images = count_tar_images(tmp / "curate" / "shards")
        i_images = count_tar_images(tmp / "import" / "image" / "shards")
    c_work = c_stats["wall_s"] - c_stats["ray_start_s"]
    i_work = i_stats["wall_s"] - i_stats["ray_start_s"]
    res = {
        "bench": "import",
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "inputs": n,
        "side": args.side,
        "partition_size": args.partition_size,
        "job_cpus": args.cpus,
        "loadavg_before": load0,
        "loadavg_after": load1,
        "curate_whole_s": round(curate["wall_s"], 2),
        "curate_img_per_s": round(n / curate["wall_s"], 1),
        "curate_work_img_per_s": round(n / c_work, 1),
        "import_whole_s": round(imp["wall_s"], 2),
        "import_img_per_s": round(n / imp["wall_s"], 1),
        "import_work_img_per_s": round(n / i_work, 1),
        "ratio": round(curate["wall_s"] / imp["wall_s"], 3),
        "ratio_without_ray_start": round(c_work / i_work, 3),
        "curate_timings_s": {k: round(v, 2) for k, v in c_stats["timings_s"].items()},
        "import_timings_s": {k: round(v, 2) for k, v in i_stats["timings_s"].items()},
        "curate_images": c_images,
        "import_images": i_images,
        "import_kept": i_stats["kept"],
    }
    if not c_images == i_images == i_stats["kept"] == n:
        raise SystemExit(f"outputs incomplete: curate {c_images}, import {i_images} of {n}")
    print(
        f"{n} JPEGs ({args.side} px), partitions of {args.partition_size}, {args.cpus} CPUs: "
        f"curate first stage {res['curate_img_per_s']} img/s ({res['curate_work_img_per_s']} "
        f"without Ray start-up) | import {res['import_img_per_s']} img/s "
        f"({res['import_work_img_per_s']}) -> import/curate {res['ratio']}x "
        f"({res['ratio_without_ray_start']}x); load {load0} -> {load1}"
    )
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
