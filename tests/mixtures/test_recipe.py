"""Recipes: the paper's four stages and the demo parse; every bad field is named; check_recipe
finds what only the file system can tell."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from manifests.configs import ConfigError
from mixtures import Strategy, check_recipe, load_recipe, parse_strategy
from mixtures.report import composition
from mixtures.sampler import build_plan
from vl3data.cli import main as vl3data_main

from .conftest import source, write_recipe, write_set

RECIPES = Path(__file__).resolve().parents[2] / "mixtures" / "recipes"
SHIPPED = sorted(RECIPES.glob("*.yaml"))


def test_the_four_stages_and_the_demo_are_shipped():
    names = {p.stem for p in SHIPPED}
    assert {"stage1", "stage2", "stage3", "stage4", "demo_stage1"} <= names


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_every_shipped_recipe_parses(path):
    recipe = load_recipe(path)
    assert recipe.stage and recipe.groups
    for _, _, src in recipe.sources():
        assert Path(src.path).is_absolute()


# The group amounts of the paper's Tables 1-4 (arXiv 2501.13106); no table gives per-dataset ones.
TABLES = {
    "stage1": {
        "scene_images": 11_840_000,
        "scene_text_images": 930_000,
        "documents": 2_800_000,
    },
    "stage2": {
        "scene_images": 12_560_000,
        "scene_text_images": 4_690_000,
        "documents": 2_680_000,
        "charts": 40_000,
        "fine_grained": 1_000_000,
        "text_only": 6_250_000,
    },
    "stage3": {
        "general_images": 9_870_000,
        "documents": 1_310_000,
        "charts_figures": 1_000_000,
        "ocr": 830_000,
        "image_grounding": 500_000,
        "multi_image": 410_000,
        "text_only": 2_210_000,
        "general_videos": 2_920_000,
    },
    "stage4": {
        "general_videos": 3_030_000,
        "streaming_videos": 36_200,
        "temporal_grounding": 210_000,
        "image_only": 880_000,
        "text_only": 1_560_000,
    },
}


@pytest.mark.parametrize("stage", sorted(TABLES))
def test_paper_recipes_carry_the_table_amounts_and_validate_on_placeholder_sets(stage, tmp_path):
    """Every source pointed at a small set of its modality: the recipe checks clean, plans,
    and its composition reports the table's group amounts as targets beside what it realises."""
    data = yaml.safe_load((RECIPES / f"{stage}.yaml").read_text())
    for g in data["groups"]:
        for src in g["sources"]:
            if src["modality"] == "text":
                path = tmp_path / f"{src['name']}.jsonl"
                turns = [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]
                lines = [json.dumps({"conversations": turns}) for _ in range(3)]
                path.write_text("\n".join(lines) + "\n")
            else:
                path = write_set(
                    tmp_path / g["name"] / src["name"], src["name"], 5, 2, src["modality"]
                )
            src["path"] = str(path)
    recipe = load_recipe(write_recipe(tmp_path / f"{stage}.yaml", data["groups"], stage=stage))
    assert check_recipe(recipe) == []
    groups = {r["group"]: r for r in composition(build_plan(recipe)) if r["level"] == "group"}
    assert {g: r["target"] for g, r in groups.items()} == TABLES[stage]
    total = sum(TABLES[stage].values())
    for g, r in groups.items():
        assert r["target_share"] == pytest.approx(TABLES[stage][g] / total)
        assert r["epoch_samples"] > 0


def test_stage1_scene_images_are_the_four_named_sources():
    recipe = load_recipe(RECIPES / "stage1.yaml")
    assert [s.name for s in recipe.groups[0].sources] == [
        "vl3_syn7m_short",
        "llava_pretrain_558k",
        "objects365_recap",
        "sa1b_recap",
    ]


def test_stage4_mixes_video_image_and_text():
    recipe = load_recipe(RECIPES / "stage4.yaml")
    assert {src.modality for _, _, src in recipe.sources()} == {"video", "image", "text"}
    assert {"streaming_videos", "temporal_grounding"} <= {g.name for g in recipe.groups}


def test_demo_recipe_points_at_the_demo_set_relative_to_itself():
    recipe = load_recipe(RECIPES / "demo_stage1.yaml")
    paths = {src.name: Path(src.path) for _, _, src in recipe.sources()}
    assert paths["demo_syn7m_short"] == (RECIPES / "../../out/demo_syn7m_captions/short").resolve()
    assert paths["demo_text"] == RECIPES / "demo_text.jsonl"
    assert 5 <= sum(1 for line in paths["demo_text"].read_text().splitlines() if line) <= 10
    problems = check_recipe(recipe)
    # the text file always checks clean; the image set exists once `make demo` has run
    assert not [p for p in problems if "demo_text" in p]


GOOD = {
    "stage": "s",
    "seed": 1,
    "groups": [
        {"name": "a", "sources": [source("x", "/d/x"), source("y", "/d/y", "video")]},
        {"name": "b", "sources": [source("z", "/d/z", "text", "first:10")]},
    ],
}


def mutate(fn):
    data = copy.deepcopy(GOOD)
    fn(data)
    return data


def _set(data, g, s, key, value):
    data["groups"][g]["sources"][s][key] = value


def _del(data, g, s, key):
    del data["groups"][g]["sources"][s][key]


BAD = [
    ("strategy_word", lambda d: _set(d, 1, 0, "strategy", "most"), "groups[1].sources[0].strategy"),
    (
        "percent_over_100",
        lambda d: _set(d, 0, 1, "strategy", "random:150%"),
        "groups[0].sources[1].strategy",
    ),
    ("repeat_0", lambda d: _set(d, 0, 0, "strategy", "repeat:0"), "groups[0].sources[0].strategy"),
    (
        "repeat_fraction",
        lambda d: _set(d, 0, 0, "strategy", "repeat:1.5"),
        "groups[0].sources[0].strategy",
    ),
    ("first_0", lambda d: _set(d, 0, 0, "strategy", "first:0"), "groups[0].sources[0].strategy"),
    (
        "first_no_amount",
        lambda d: _set(d, 0, 0, "strategy", "first"),
        "groups[0].sources[0].strategy",
    ),
    (
        "all_with_amount",
        lambda d: _set(d, 0, 0, "strategy", "all:3"),
        "groups[0].sources[0].strategy",
    ),
    ("modality", lambda d: _set(d, 0, 1, "modality", "audio"), "groups[0].sources[1].modality"),
    ("no_path", lambda d: _del(d, 0, 1, "path"), "groups[0].sources[1].path"),
    ("empty_path", lambda d: _set(d, 1, 0, "path", " "), "groups[1].sources[0].path"),
    (
        "jsonl_for_images",
        lambda d: _set(d, 0, 0, "path", "/d/t.jsonl"),
        "groups[0].sources[0].path",
    ),
    ("no_name", lambda d: _del(d, 0, 0, "name"), "groups[0].sources[0].name"),
    ("bad_name", lambda d: _set(d, 0, 0, "name", "a b"), "groups[0].sources[0].name"),
    ("duplicate_name", lambda d: _set(d, 1, 0, "name", "x"), "groups[1].sources[0].name"),
    ("unknown_field", lambda d: _set(d, 1, 0, "weight", 5), "groups[1].sources[0].weight"),
    ("negative_target", lambda d: _set(d, 0, 0, "target", -1), "groups[0].sources[0].target"),
    ("target_text", lambda d: _set(d, 0, 0, "target", "lots"), "groups[0].sources[0].target"),
    ("no_groups", lambda d: d.pop("groups"), "groups"),
    ("empty_groups", lambda d: d.update(groups=[]), "groups"),
    ("groups_not_list", lambda d: d.update(groups={"a": 1}), "groups"),
    ("group_no_sources", lambda d: d["groups"][1].update(sources=[]), "groups[1].sources"),
    ("group_no_name", lambda d: d["groups"][1].pop("name"), "groups[1].name"),
    ("duplicate_group", lambda d: d["groups"][1].update(name="a"), "groups[1].name"),
    ("no_stage", lambda d: d.pop("stage"), "stage"),
    ("negative_seed", lambda d: d.update(seed=-1), "seed"),
]


@pytest.mark.parametrize("change,field", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_recipes_name_the_field(tmp_path, change, field):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(mutate(change)))
    with pytest.raises(ConfigError) as err:
        load_recipe(path)
    assert err.value.field == field
    assert f"'{field}'" in str(err.value)


def test_the_good_recipe_is_good(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(GOOD))
    recipe = load_recipe(path)
    assert [src.name for _, _, src in recipe.sources()] == ["x", "y", "z"]


def test_overrides_address_list_items(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(GOOD))
    recipe = load_recipe(path, ["seed=5", "groups[1].sources[0].strategy=random:20%"])
    assert recipe.seed == 5 and recipe.groups[1].sources[0].strategy == "random:20%"
    with pytest.raises(ConfigError) as err:
        load_recipe(path, ["groups[1].sources[0].strategy=repeat:0"])
    assert err.value.field == "groups[1].sources[0].strategy"
    with pytest.raises(ConfigError):
        load_recipe(path, ["groups[7].name=x"])


def test_relative_paths_are_relative_to_the_recipe(tmp_path):
    data = mutate(lambda d: _set(d, 0, 0, "path", "../sets/x"))
    path = tmp_path / "recipes" / "r.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(data))
    assert load_recipe(path).groups[0].sources[0].path == str(tmp_path / "sets" / "x")


@pytest.mark.parametrize(
    "text,parsed",
    [
        ("all", Strategy("all")),
        ("first:10", Strategy("first", count=10)),
        ("first:12.5%", Strategy("first", percent=12.5)),
        ("random:100%", Strategy("random", percent=100.0)),
        ("random:3", Strategy("random", count=3)),
        ("repeat:3", Strategy("repeat", times=3)),
    ],
)
def test_strategies_parse(text, parsed):
    assert parse_strategy(text) == parsed


def test_strategy_amounts():
    assert parse_strategy("first:10%").amount(405) == 40
    assert parse_strategy("random:100%").amount(7) == 7
    assert parse_strategy("first:500").amount(300) == 500
    assert parse_strategy("repeat:4").amount(9) == 9  # distinct samples; 4 passes over them


def test_check_recipe_reports_missing_sources_and_how_short(tmp_path, shard_sets):
    (tmp_path / "no_json").mkdir()
    bad_jsonl = tmp_path / "bad.jsonl"
    bad_jsonl.write_text('{"conversations": []}\n{"text": "no conversations"}\n')
    path = write_recipe(
        tmp_path / "r.yaml",
        [
            {
                "name": "g",
                "sources": [
                    source("gone", tmp_path / "nowhere"),
                    source("no_json", tmp_path / "no_json"),
                    source("short", shard_sets["small"], "video", "first:500"),
                    source("random_short", shard_sets["medium"], "image", "random:401"),
                    source("wrong_modality", shard_sets["large"], "video"),
                    source("fine", shard_sets["large"], "image", "random:50%"),
                    source("bad_text", bad_jsonl, "text"),
                    source("no_text", tmp_path / "t.jsonl", "text"),
                ],
            }
        ],
    )
    problems = check_recipe(load_recipe(path))
    text = "\n".join(problems)
    assert len(problems) == 7, text
    assert f"groups[0].sources[0] (gone): no shard set at {tmp_path / 'nowhere'}" in text
    assert "groups[0].sources[1] (no_json): no shard set" in text and "without dataset.json" in text
    assert "(short): first:500 asks for 500 samples" in text and "holds 40: 460 short" in text
    assert "(random_short): random:401 asks for 401 samples" in text and "1 short" in text
    assert "(wrong_modality): modality is video" in text and "says image" in text
    assert "(fine)" not in text
    assert "bad.jsonl:2 has no 'conversations' list" in text
    assert "(no_text): no JSONL file" in text


def test_check_recipe_reports_percentages_above_100(tmp_path, shard_sets):
    path = write_recipe(
        tmp_path / "r.yaml", [{"name": "g", "sources": [source("m", shard_sets["medium"])]}]
    )
    recipe = load_recipe(path)
    assert check_recipe(recipe) == []
    recipe.groups[0].sources[0].strategy = "first:120%"  # set after validation
    (problem,) = check_recipe(recipe)
    assert "groups[0].sources[0] (m)" in problem and "at most 100" in problem


def test_cli_checks_and_prints_the_plan(tmp_path, shard_sets, capsys):
    path = write_recipe(
        tmp_path / "r.yaml",
        [
            {
                "name": "g",
                "target": 500,
                "sources": [source("m", shard_sets["medium"], strategy="repeat:2")],
            }
        ],
    )
    assert vl3data_main(["mix", str(path), "--check"]) == 0
    out = capsys.readouterr().out
    assert "m  " in out and "800" in out and "500" in out
    assert (
        vl3data_main(
            ["mix", str(path), "--check", "--set", "groups[0].sources[0].strategy=first:401"]
        )
        == 1
    )
    assert "1 short" in capsys.readouterr().err
    assert (
        vl3data_main(["mix", str(path), "--check", "--set", "groups[0].sources[0].modality=sound"])
        == 2
    )
    assert "groups[0].sources[0].modality" in capsys.readouterr().err
