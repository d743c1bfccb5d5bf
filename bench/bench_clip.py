"""The CLIP stage inside the Ray pipeline vs a bare ``encode_image`` loop (target >= 0.9x).

Same images (320-px JPEGs cut from the real sample photos), same model (open_clip ViT-B-32 with
random weights: the real architecture, no download), same batch size, same torch threads. The
bare loop preprocesses and encodes in this process. The pipeline runs ``run_partitions`` with
the ``ClipEmbed`` stage as a Ray actor (model loaded once in ``setup()``), reading the images
from their partitions and writing the resumable pieces. Ray start-up is timed apart.

    .venv/bin/python bench/bench_clip.py [--inputs 512] [--batch-size 32] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import keep_ray_local
from pools import write_pool

from curation.config import InputConfig
from curation.sources import list_partitions, load_partition
from curation.stages.clip_embed import ClipEmbed, preprocess
from curation.stages.clip_model import load_clip
from engine.ray_session import start_embedded
from engine.runner import run_partitions
from engine.workdir import WorkDir


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--inputs", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default="ViT-B-32")
    args = ap.parse_args(argv)
    keep_ray_local()  # before Ray starts: no usage statistics, no cloud probe
    import ray
    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        pool = write_pool(Path(tmp) / "pool", args.inputs)
        cfg = InputConfig(path=str(pool), partition_size=args.batch_size * 4)
        parts = list_partitions(cfg)
        files = sorted(pool.rglob("*.jpg"))

        clip = load_clip("open_clip", args.model, None)
        t0 = time.perf_counter()
        for i in range(0, len(files), args.batch_size):
            batch = [preprocess(f.read_bytes(), clip.spec) for f in files[i : i + args.batch_size]]
            clip.encode_images(np.stack(batch))
        bare = time.perf_counter() - t0
        del clip

        t0 = time.perf_counter()
        start_embedded(num_cpus=args.threads)
        startup = time.perf_counter() - t0
        # one CPU reserved for the actor (the load/write tasks need the other); torch inside
        # it runs with the same number of threads as the bare loop
        stage = ClipEmbed(
            model=args.model,
            pretrained=None,
            batch_size=args.batch_size,
            num_cpus=1,
            threads=args.threads,
        )
        t0 = time.perf_counter()
        run_partitions(
            WorkDir(Path(tmp) / "work"),
            parts,
            partial(load_partition, cfg=cfg),
            [stage],
            progress=False,
        )
        on_ray = time.perf_counter() - t0
        ray.shutdown()
    n = args.inputs
    res = {
        "inputs": n,
        "model": args.model,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "bare_img_per_s": round(n / bare, 1),
        "pipeline_img_per_s": round(n / on_ray, 1),
        "ratio": round(bare / on_ray, 3),
        "ray_startup_s": round(startup, 1),
    }
    print(
        f"{n} images, {args.model}, batch {args.batch_size}, {args.threads} threads: bare loop "
        f"{res['bare_img_per_s']} img/s, Ray pipeline {res['pipeline_img_per_s']} img/s -> "
        f"{res['ratio']}x (target >= 0.9x); Ray start-up {res['ray_startup_s']} s apart"
    )
    print(json.dumps({"bench": "clip", **res}))
    return res


if __name__ == "__main__":
    main()
