"""``dataset.json``: what a shard set is, how it was built, and its shard list.

It is written last: its presence means the shard set is complete.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
from pathlib import Path

from manifests.atomic import write_json
from manifests.schema import SCHEMA_VERSION

DATASET_JSON = "dataset.json"
#: "mixed" is a stage mixture (mixtures/) holding several modalities
MODALITIES = ("image", "video", "text", "mixed")
VERSIONED_PACKAGES = (
    "vl3data",
    "ray",
    "webdataset",
    "pyarrow",
    "pillow",
    "numpy",
    "torch",
    "open_clip_torch",
    "transformers",
)


def package_versions() -> dict[str, str]:
    out = {}
    for name in VERSIONED_PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def write_dataset_json(
    out_dir: str | Path,
    *,
    name: str,
    modality: str,
    task: str,
    shards: list[dict],
    config: dict,
    config_hash: str,
    extra: dict | None = None,
) -> dict:
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
    for s in shards:  # dataset.json says the set is complete: never while a shard is missing
        path = Path(out_dir) / s["path"]
        if not path.is_file() or path.stat().st_size != s["bytes"]:
            raise RuntimeError(
                f"{path} is missing or not the {s['bytes']} bytes its partition recorded; "
                "dataset.json is not written (rerun with --restart to rebuild the set)"
            )
    subsets: dict[str, dict] = {}
    for s in shards:
        sub = subsets.setdefault(s["subset"], {"samples": 0, "shards": 0, "bytes": 0})
        sub["samples"] += s["samples"]
        sub["shards"] += 1
        sub["bytes"] += s["bytes"]
    doc = {
        "name": name,
        "modality": modality,
        "task": task,
        "schema_version": SCHEMA_VERSION,
        "samples": sum(s["samples"] for s in shards),
        "subsets": subsets,
        "shards": shards,
        "config": config,
        "config_hash": config_hash,
        "versions": package_versions(),
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        **(extra or {}),
    }
    write_json(Path(out_dir) / DATASET_JSON, doc)
    return doc


def read_dataset_json(out_dir: str | Path) -> dict:
    path = Path(out_dir) / DATASET_JSON
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {out_dir} is not a finished shard set")
    return json.loads(path.read_text())


def shard_paths(out_dir: str | Path, subset: str | None = None) -> list[Path]:
    """Absolute paths of a shard set's tars, in order, optionally of one subset."""
    doc = read_dataset_json(out_dir)
    return [
        Path(out_dir) / s["path"] for s in doc["shards"] if subset is None or s["subset"] == subset
    ]
