"""Tiny synthetic shard sets of very different sizes, and recipes over them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from manifests.dataset import write_dataset_json
from manifests.shards import ShardSetWriter

# name -> (samples, max_count per shard, modality); every set has several shards
SETS = {"small": (40, 7, "video"), "medium": (400, 45, "image"), "large": (4000, 350, "image")}


def write_set(out: Path, name: str, n: int, max_count: int, modality: str) -> Path:
    w = ShardSetWriter(out, "main", max_count=max_count, max_bytes=10**9)
    for i in range(n):
        key = f"{name}{i:05d}"
        sample = {"__key__": key, "json": json.dumps({"i": i, "set": name}).encode()}
        if modality == "video":  # frames as {key}.f0000.jpg, as video_prep writes them
            sample["f0000.jpg"] = bytes([i % 256]) * 3
            sample["f0001.jpg"] = bytes([(i + 1) % 256]) * 5
        else:
            sample["jpg"] = bytes([i % 256]) * (1 + i % 5)
        w.write(sample)
    write_dataset_json(
        out,
        name=name,
        modality=modality,
        task="test",
        shards=w.close(),
        config={},
        config_hash="test",
    )
    return out


@pytest.fixture(scope="session")
def shard_sets(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sets")
    return {
        name: write_set(root / name, name, n, mc, modality)
        for name, (n, mc, modality) in SETS.items()
    }


def source(name, path, modality="image", strategy="all", **kw) -> dict:
    return {"name": name, "path": str(path), "modality": modality, "strategy": strategy, **kw}


def write_recipe(path: Path, groups: list[dict], seed: int = 7, stage: str = "test") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"stage": stage, "seed": seed, "groups": groups}))
    return path


@pytest.fixture()
def mix_recipe(tmp_path, shard_sets) -> Path:
    """40 video + 400 image samples in one group, 4000 image samples in another."""
    return write_recipe(
        tmp_path / "mix.yaml",
        [
            {
                "name": "small_and_medium",
                "sources": [
                    source("small", shard_sets["small"], "video"),
                    source("medium", shard_sets["medium"]),
                ],
            },
            {"name": "big", "sources": [source("large", shard_sets["large"])]},
        ],
    )
