"""Streaming mixture read vs reading the same tars with plain webdataset (target >= 0.9x).

Two shard sets of different sizes (random 8 KiB payloads + a JSON member), a recipe taking
both whole. Plain: ``webdataset.WebDataset(all tars, shardshuffle=False)`` yielding raw samples.
Ours: ``mixtures.open_stage(recipe)`` (one reader), which also interleaves the sources by
weight. Nothing is decoded by either. Interleaved rounds; prints samples/s and the ratio.

    .venv/bin/python bench/bench_mixture.py [--samples 20000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import webdataset as wds
import yaml

from manifests.dataset import shard_paths, write_dataset_json
from manifests.shards import ShardSetWriter
from mixtures import open_stage


def write_set(out: Path, n: int) -> Path:
    w = ShardSetWriter(out, "images", max_count=1000, max_bytes=10**9)
    for i in range(n):
        w.write(
            {"__key__": f"{i:08d}", "jpg": os.urandom(8192), "json": json.dumps({"i": i}).encode()}
        )
    write_dataset_json(
        out,
        name=out.name,
        modality="image",
        task="bench",
        shards=w.close(),
        config={},
        config_hash="bench",
    )
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--samples", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        a = write_set(Path(tmp) / "a", args.samples * 3 // 4)
        b = write_set(Path(tmp) / "b", args.samples // 4)
        recipe = Path(tmp) / "r.yaml"
        recipe.write_text(
            yaml.safe_dump(
                {
                    "stage": "bench",
                    "seed": 0,
                    "groups": [
                        {
                            "name": "g",
                            "sources": [
                                {"name": "a", "path": str(a), "modality": "image"},
                                {"name": "b", "path": str(b), "modality": "image"},
                            ],
                        }
                    ],
                }
            )
        )
        urls = [str(p) for p in shard_paths(a) + shard_paths(b)]
        t_plain = t_ours = 0.0
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            n_plain = sum(1 for _ in wds.WebDataset(urls, shardshuffle=False, empty_check=False))
            t_plain += time.perf_counter() - t0
            t0 = time.perf_counter()
            n_ours = sum(1 for _ in open_stage(recipe, rank=0, world_size=1))
            t_ours += time.perf_counter() - t0
        assert n_plain == n_ours == args.samples, (n_plain, n_ours)
    n = args.samples * args.rounds
    res = {
        "samples": args.samples,
        "rounds": args.rounds,
        "plain_samples_per_s": round(n / t_plain),
        "mixture_samples_per_s": round(n / t_ours),
        "ratio": round(t_plain / t_ours, 3),
    }
    print(
        f"{args.samples} samples x {args.rounds}: plain webdataset "
        f"{res['plain_samples_per_s']}/s, mixture {res['mixture_samples_per_s']}/s -> "
        f"{res['ratio']}x (target >= 0.9x)"
    )
    print(json.dumps({"bench": "mixture", **res}))
    return res


if __name__ == "__main__":
    main()
