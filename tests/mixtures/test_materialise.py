"""`vl3data mix`: check a recipe, and write a mixture as its own shard set."""

from __future__ import annotations

from collections import Counter

import pyarrow.parquet as pq
import yaml

from manifests.dataset import read_dataset_json, shard_paths
from manifests.shards import iter_samples
from vl3data.cli import main


def recipe_file(tmp_path, sets, strategies=("all", "all")) -> str:
    (big, small) = sets
    recipe = {
        "stage": "stage_t",
        "seed": 3,
        "groups": [
            {
                "name": "scene",
                "sources": [
                    {
                        "name": "big",
                        "path": str(big),
                        "modality": "image",
                        "strategy": strategies[0],
                    },
                    {
                        "name": "small",
                        "path": str(small),
                        "modality": "video",
                        "strategy": strategies[1],
                    },
                ],
            }
        ],
    }
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


def test_mix_writes_a_shuffled_shard_set_with_provenance(tmp_path, shard_sets, capsys):
    big, small = shard_sets["medium"], shard_sets["small"]
    recipe = recipe_file(tmp_path, (big, small), ("first:100", "repeat:2"))
    out = tmp_path / "mix"
    assert main(["mix", recipe, "--output", str(out), "--shuffle-buffer", "32"]) == 0
    doc = read_dataset_json(out)
    assert doc["samples"] == 100 + 2 * read_dataset_json(small)["samples"]
    assert doc["sources"] == {"big": 100, "small": 2 * read_dataset_json(small)["samples"]}
    prov = pq.read_table(out / "ledger").to_pylist()
    assert len(prov) == doc["samples"]
    assert Counter(r["source"] for r in prov) == Counter(doc["sources"])
    keys = [s["__key__"] for s in iter_samples(shard_paths(out))]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    # shuffled across sources: the first 50 are not all from one source
    assert len({r["source"] for r in prov[:50]}) == 2
    again = tmp_path / "again"
    assert main(["mix", recipe, "--output", str(again), "--shuffle-buffer", "32"]) == 0
    assert [p.read_bytes() for p in shard_paths(again)] == [
        p.read_bytes() for p in shard_paths(out)
    ]


def test_mix_check_reports_shortfalls_and_missing_sources(tmp_path, shard_sets, capsys):
    big, small = shard_sets["medium"], shard_sets["small"]
    ok = recipe_file(tmp_path, (big, small))
    assert main(["mix", ok, "--check"]) == 0
    assert "big" in capsys.readouterr().out
    short = recipe_file(tmp_path, (big, small), ("first:500", "all"))
    assert main(["mix", short, "--check"]) == 1
    assert "100 short" in capsys.readouterr().err
    missing = recipe_file(tmp_path, (tmp_path / "nope", small))
    assert main(["mix", missing, "--check"]) == 1
    assert main(["mix", ok, "--set", "groups[0].sources[0].strategy=every:2"]) == 2
