"""Amounts (counts and fractions of the stage), oversampling by repetition, the composition
report and the token estimate."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pytest
import yaml

from manifests.configs import ConfigError
from manifests.dataset import write_dataset_json
from manifests.shards import ShardSetWriter
from mixtures import build_plan, check_recipe, iter_reader, load_recipe, open_stage
from mixtures.report import HEURISTIC, composition, token_estimate
from vl3data.cli import main

from .conftest import source

DEMO_TEXT = Path(__file__).resolve().parents[2] / "mixtures" / "recipes" / "demo_text.jsonl"


def recipe_at(path: Path, groups: list[dict], total: int | None = None, seed: int = 7) -> Path:
    doc = {"stage": "t", "seed": seed, "groups": groups}
    if total is not None:
        doc["total"] = total
    path.write_text(yaml.safe_dump(doc))
    return path


def amounts_recipe(tmp_path, shard_sets, medium="random", **kw) -> Path:
    """medium (400) oversampled to 1000, small (40) half of a 200-sample stage (100: 2.5 passes),
    large (4000) 10% of the stage (20)."""
    return recipe_at(
        tmp_path / "amounts.yaml",
        [
            {
                "name": "g",
                "sources": [
                    source("medium", shard_sets["medium"], strategy=medium, amount=1000),
                    source("small", shard_sets["small"], "video", "first", amount=0.5),
                ],
            },
            {"name": "h", "sources": [source("large", shard_sets["large"], amount="10%")]},
        ],
        total=kw.get("total", 200),
    )


def test_amount_with_oversampling_realises_exactly_the_amount(tmp_path, shard_sets):
    path = amounts_recipe(tmp_path, shard_sets)
    recipe = load_recipe(path)
    assert recipe.amounts() == {"medium": 1000, "small": 100, "large": 20}
    samples = list(open_stage(path))
    got = Counter(s["__source__"] for s in samples)
    assert got == {"medium": 1000, "small": 100, "large": 20}
    per_key = {
        name: Counter(s["__key__"] for s in samples if s["__source__"] == name) for name in got
    }
    # whole passes, then a remainder picked by the strategy
    assert Counter(per_key["medium"].values()) == {2: 200, 3: 200}
    assert Counter(per_key["small"].values()) == {2: 20, 3: 20}
    thrice = sorted(k for k, n in per_key["small"].items() if n == 3)
    assert thrice == [f"small{i:05d}" for i in range(20)]  # "first": the first 20
    assert len(per_key["large"]) == 20
    # split over readers the epoch is the same, exactly
    plan = build_plan(recipe)
    parts = [s for r in range(3) for s in iter_reader(plan, 0, r, 3)]
    assert Counter(s["__source__"] for s in parts) == got
    assert Counter((s["__source__"], s["__key__"]) for s in parts) == Counter(
        (s["__source__"], s["__key__"]) for s in samples
    )


def test_amount_below_the_set_picks_by_strategy(tmp_path, shard_sets):
    path = recipe_at(
        tmp_path / "r.yaml",
        [
            {
                "name": "g",
                "sources": [
                    source("medium", shard_sets["medium"], strategy="first", amount=30),
                    source("large", shard_sets["large"], strategy="random", amount=50),
                ],
            }
        ],
    )
    samples = list(open_stage(path))
    first = sorted(json.loads(s["json"])["i"] for s in samples if s["__source__"] == "medium")
    assert first == list(range(30))
    rand = sorted(json.loads(s["json"])["i"] for s in samples if s["__source__"] == "large")
    assert len(set(rand)) == 50 and rand != list(range(50))


def test_check_notes_oversampling_without_calling_it_a_problem(tmp_path, shard_sets):
    recipe = load_recipe(amounts_recipe(tmp_path, shard_sets))
    notes: list[str] = []
    assert check_recipe(recipe, notes) == []
    medium = next(n for n in notes if "(medium)" in n)
    assert "oversampled 2.50x" in medium and "600 repeats" in medium
    assert any("(small)" in n and "2.50x" in n for n in notes)
    assert any(n.startswith("total:") and "1120" in n for n in notes)  # amounts vs total 200
    assert not any("(large)" in n for n in notes)


def _amount_error(tmp_path, groups, total=None) -> ConfigError:
    with pytest.raises(ConfigError) as err:
        load_recipe(recipe_at(tmp_path / "bad.yaml", groups, total))
    return err.value


def test_fractions_summing_above_one_are_refused(tmp_path):
    groups = [
        {
            "name": "g",
            "sources": [
                source("a", "/d/a", amount=0.7),
                source("b", "/d/b", amount="50%"),
                source("c", "/d/c", amount=5000),
            ],
        }
    ]
    err = _amount_error(tmp_path, groups, total=1000)
    assert err.field == "total" and "1.2" in str(err) and "120%" in str(err)
    err = _amount_error(tmp_path, groups)  # fractions need total
    assert err.field == "groups[0].sources[0].amount" and "set total: N" in str(err)


@pytest.mark.parametrize(
    "change,field",
    [
        ({"strategy": "repeat:2"}, "strategy"),
        ({"strategy": "first:10"}, "strategy"),
        ({"amount": 1.5}, "amount"),
        ({"amount": -3}, "amount"),
        ({"amount": "lots"}, "amount"),
        ({"amount": "150%"}, "amount"),
        ({"amount": True}, "amount"),
    ],
)
def test_bad_amounts_name_the_field(tmp_path, change, field):
    src = {**source("a", "/d/a", amount=10), **change}
    err = _amount_error(tmp_path, [{"name": "g", "sources": [src]}], total=100)
    assert err.field == f"groups[0].sources[0].{field}"


def test_composition_numbers_are_exact(tmp_path, shard_sets):
    path = recipe_at(
        tmp_path / "r.yaml",
        [
            {
                "name": "g1",
                "target": 300,
                "sources": [
                    source("small", shard_sets["small"], "video", target=50),
                    source("medium", shard_sets["medium"], strategy="first:100", target=150),
                ],
            },
            {
                "name": "g2",
                "target": 100,
                "sources": [
                    source("large", shard_sets["large"], "image", "random:10%", target=200)
                ],
            },
        ],
    )
    rows = composition(build_plan(load_recipe(path)))
    total = 40 + 100 + 400
    assert [(r["level"], r["group"], r["source"]) for r in rows] == [
        ("source", "g1", "small"),
        ("source", "g1", "medium"),
        ("group", "g1", None),
        ("source", "g2", "large"),
        ("group", "g2", None),
    ]
    assert [r["epoch_samples"] for r in rows] == [40, 100, 140, 400, 400]
    assert [r["share"] for r in rows] == [n / total for n in (40, 100, 140, 400, 400)]
    assert [r["target"] for r in rows] == [50, 150, 300, 200, 100]
    assert [r["target_share"] for r in rows] == [50 / 400, 150 / 400, 0.75, 200 / 400, 0.25]
    assert rows[2]["vs_target"] == 140 / 300 and rows[4]["vs_target"] == 4.0
    # a level where some rows have no target gets no target shares
    rows = composition(build_plan(load_recipe(amounts_recipe(tmp_path, shard_sets))))
    assert all(r["target_share"] is None for r in rows)
    assert [r["amount"] for r in rows] == [1000, 100, 1100, 20, 20]
    assert [r["epoch_samples"] for r in rows] == [1000, 100, 1100, 20, 20]


def test_token_estimate_of_the_demo_text_is_its_bytes_over_four(tmp_path, shard_sets):
    path = recipe_at(
        tmp_path / "r.yaml",
        [
            {"name": "text", "sources": [source("demo_text", DEMO_TEXT, "text")]},
            {"name": "img", "sources": [source("medium", shard_sets["medium"])]},
        ],
    )
    est = token_estimate(build_plan(load_recipe(path)))
    records = [json.loads(line) for line in DEMO_TEXT.read_text().splitlines() if line.strip()]
    nbytes = sum(
        len(json.dumps(r["conversations"], ensure_ascii=False).encode("utf-8")) for r in records
    )
    text = est["sources"][0]
    assert text["sampled"] == len(records) and text["with_conversations"] == len(records)
    assert text["text_tokens"] == round(nbytes / 4) and text["vision_tokens"] == 0
    # the synthetic images carry neither conversations nor a size: unknown, not invented
    img = est["sources"][1]
    assert img["sampled"] == 200 and img["text_tokens"] is None and img["vision_tokens"] is None
    assert est["text_tokens"] == round(nbytes / 4) and est["vision_tokens"] == 0
    assert est["unknown_text"] == est["unknown_vision"] == ["medium"]
    assert est["heuristic"] == HEURISTIC and "/ 4" in HEURISTIC


def test_token_estimate_counts_image_patches_from_width_and_height(tmp_path):
    out = tmp_path / "sized"
    w = ShardSetWriter(out, "main", max_count=2, max_bytes=10**9)
    sizes = [(28, 15), (140, 140), (1, 1)]
    for i, (width, height) in enumerate(sizes):
        rec = {"width": width, "height": height, "conversations": [{"value": "x" * (4 * i)}]}
        w.write({"__key__": f"s{i}", "json": json.dumps(rec).encode(), "jpg": b"x"})
    write_dataset_json(
        out,
        name="sized",
        modality="image",
        task="t",
        shards=w.close(),
        config={},
        config_hash="t",
    )
    path = recipe_at(
        tmp_path / "r.yaml",
        [{"name": "g", "sources": [source("sized", out, amount=6)]}],
    )
    row = token_estimate(build_plan(load_recipe(path)))["sources"][0]
    per = [math.ceil(a / 14) * math.ceil(b / 14) for a, b in sizes]
    assert per == [4, 100, 1]
    assert row["vision_tokens_per_sample"] == sum(per) / 3
    assert row["vision_tokens"] == round(sum(per) / 3 * 6)  # two passes per epoch
    conv = [len(json.dumps([{"value": "x" * (4 * i)}]).encode()) for i in range(3)]
    assert row["text_tokens"] == round(sum(conv) / 4 / 3 * 6)


def test_cli_prints_composition_and_tokens_and_writes_them(tmp_path, shard_sets, capsys):
    path = str(amounts_recipe(tmp_path, shard_sets))
    assert main(["mix", path, "--check"]) == 0
    out = capsys.readouterr().out
    assert "note: groups[0].sources[0] (medium)" in out
    assert "target share" in out and "token estimate per epoch" in out
    assert "vision unknown for: medium, small, large" in out
    dest = tmp_path / "mixed"
    assert main(["mix", path, "--output", str(dest), "--shuffle-buffer", "16"]) == 0
    doc = json.loads((dest / "composition.json").read_text())
    assert [r["epoch_samples"] for r in doc["composition"]] == [1000, 100, 1100, 20, 20]
    assert doc["tokens"]["heuristic"] == HEURISTIC and doc["notes"]
    bad = amounts_recipe(tmp_path, shard_sets, total=None)
    assert main(["mix", str(bad), "--check"]) == 2
    assert "set total: N" in capsys.readouterr().err
