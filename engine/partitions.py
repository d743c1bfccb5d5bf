"""Partitions: the unit of work, of resume and of output (each writes its own shards).

A job lists its partitions once, up front, into ``_work/plan.json``; every rerun reuses that
plan, so partition indexes (and the shard names derived from them) never move.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from manifests.atomic import write_json


@dataclass(frozen=True)
class Partition:
    """One unit of input: a list of files, one tar, a slice of a parquet or a shard, videos."""

    index: int
    kind: str
    spec: dict

    def to_json(self) -> str:
        # not dataclasses.asdict: it deep-copies the spec (a partition's whole file list)
        return json.dumps(
            {"index": self.index, "kind": self.kind, "spec": self.spec}, sort_keys=True
        )

    def inputs(self) -> int | None:
        """How many inputs the partition holds, when its spec says so without reading it: a
        list of ``files`` or ``items``, or a slice's ``length``/``take``. None for a tar."""
        for key in ("files", "items"):
            if isinstance(self.spec.get(key), list):
                return len(self.spec[key])
        for key in ("length", "take"):
            if isinstance(self.spec.get(key), int):
                return self.spec[key]
        return None

    @staticmethod
    def from_json(text: str) -> Partition:
        d = json.loads(text)
        return Partition(index=d["index"], kind=d["kind"], spec=d["spec"])


def prepare_plan(
    plan_path: Path,
    partitions: Callable[[], list[Partition]],
    config_hash: str,
) -> list[Partition]:
    """The partition plan of this output: made once, reused by every rerun.

    A rerun with another config would mix results of two jobs: refuse, naming the way out.
    """
    if plan_path.is_file():
        plan = json.loads(plan_path.read_text())
        if plan["config_hash"] != config_hash:
            raise RuntimeError(
                f"{plan_path.parent.parent} holds an unfinished run of a different config; "
                "rerun with the same config to finish it, or pass --restart to start over"
            )
        return [Partition.from_json(p) for p in plan["partitions"]]
    parts = partitions()
    write_json(plan_path, {"config_hash": config_hash, "partitions": [p.to_json() for p in parts]})
    return parts


def count_files(root: Path, extensions: list[str]) -> int:
    """Files under ``root`` with one of ``extensions``: a job's inputs, counted for a plan
    without reading any of them."""
    exts = {"." + e.lower().lstrip(".") for e in extensions}
    n = 0
    for _, _, files in os.walk(root):
        n += sum(1 for f in files if Path(f).suffix.lower() in exts)
    return n
