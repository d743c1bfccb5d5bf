"""A job's finish (engine.finish): the partitions' metadata added up into stats.json and
dataset.json the same way for every job, with where the time went per pass (``passes_s``)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from curation.config import CurateConfig
from curation.curate import curate
from engine.finish import Finish, SetName, Tally, set_metas
from engine.job import JobRun
from engine.partitions import Partition
from engine.workdir import WorkDir
from manifests.configs import load_config
from manifests.dataset import read_dataset_json


def test_a_tally_adds_every_partition_and_counts_a_missing_key_as_nothing():
    metas = {
        0: {"counts": {"kept": 2, "dropped": 1}, "reasons": {"too_small": 1}, "samples": 2},
        1: {"rows": 0, "timings_s": {}},  # a partition that held no rows
        2: {"counts": {"kept": 1, "error": 2}, "reasons": {"bad": 2}, "samples": 3},
    }
    t = Tally.of(metas, counters=("reasons", "fixes"), totals=("samples",))
    assert t.counts == {"kept": 3, "dropped": 1, "error": 2}
    assert t.inputs == 6
    assert t.counters == {"reasons": {"too_small": 1, "bad": 2}, "fixes": {}}
    assert t.totals == {"samples": 5}
    empty = Tally.of({})
    assert (empty.counts, empty.inputs) == ({"kept": 0, "dropped": 0, "error": 0}, 0)


def test_set_metas_takes_one_sets_part_and_skips_partitions_without_rows():
    metas = {0: {"sets": {"a": {"samples": 1}, "b": {"samples": 2}}}, 1: {"rows": 0}}
    assert set_metas(metas, "b") == {0: {"samples": 2}}


@dataclass
class _Cfg:
    name: str = "toy"


def test_stats_and_dataset_json_carry_the_common_fields_and_only_the_named_passes(tmp_path):
    work_root = tmp_path / "_work"
    for name, rows in (("short", 7), ("write-short", 5), ("detailed", 7)):
        WorkDir(work_root / name).record_pass(2, rows, 0.5)
    parts = [Partition(i, "toy", {}) for i in range(2)]
    run = JobRun(_Cfg(), tmp_path, work_root, parts, False, time.time() - 3.0, 0.0)
    finish = Finish.of(run, passes=("short", "write-short", "missing"))
    assert finish.passes_s == {
        "short": {"partitions": 2, "rows": 7, "seconds": 0.5},
        "write-short": {"partitions": 2, "rows": 5, "seconds": 0.5},
    }
    assert finish.wall_s >= 3.0
    tally = Tally.of({0: {"counts": {"kept": 4, "dropped": 3}, "reasons": {"x": 3}}})
    stats = finish.stats(tally, {"load": 1.25}, head={"subset": "short"}, extra={"own": 1})
    folder = tmp_path / "short"
    doc = finish.write(folder, stats, SetName("toy-short", "image", "caption_short", "h"), [], "t")
    on_disk = json.loads((folder / "stats.json").read_text())
    assert on_disk == stats
    assert on_disk["subset"] == "short"
    assert {k: on_disk[k] for k in ("inputs", "kept", "dropped", "error", "reasons", "own")} == {
        "inputs": 7,
        "kept": 4,
        "dropped": 3,
        "error": 0,
        "reasons": {"x": 3},
        "own": 1,
    }
    assert on_disk["partitions"] == 2 and on_disk["timings_s"] == {"load": 1.25}
    assert on_disk["passes_s"] == finish.passes_s
    assert read_dataset_json(folder) == doc
    assert (doc["name"], doc["task"], doc["config_hash"]) == ("toy-short", "caption_short", "h")
    assert (doc["inputs"], doc["ledger_parts"], doc["config"]) == (7, 2, {"name": "toy"})


def test_a_curate_run_with_two_passes_says_where_its_time_went(tmp_path, demo_pool, ray_local):
    """A global step (exact dedup) makes curate score first and write second: stats.json has
    both passes, each over every partition of the plan."""
    pool, expected = demo_pool
    out = tmp_path / "out"
    cfg = load_config(
        CurateConfig,
        "configs/curate_local.yaml",
        [f"input.path={pool}", f"output={out}", "input.partition_size=12", "dedup.exact=true"],
    )
    curate(cfg, progress=False)
    stats = json.loads((out / "stats.json").read_text())
    passes = stats["passes_s"]
    assert list(passes) == ["score", "write"]  # in the order they ran
    for p in passes.values():
        assert p["partitions"] == stats["partitions"] > 1
        assert p["seconds"] > 0
    assert passes["score"]["rows"] == stats["inputs"] == len(expected)
    assert stats["kept"] + stats["dropped"] + stats["error"] == stats["inputs"]
    assert read_dataset_json(out)["inputs"] == stats["inputs"]
