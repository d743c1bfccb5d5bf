"""Hostile input to configs and the command line: every one is a clean error naming the field,
the file or the folder (exit 2 for a config, 1 for the file system), never a traceback, and
nothing left behind."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest

from curation.config import CurateConfig
from manifests.configs import ConfigError, load_config
from mixtures.recipe import load_recipe
from vl3data.cli import main

ROOT = Path(__file__).parent.parent
CURATE = ROOT / "configs" / "curate_local.yaml"
TAG = "!!python/object/apply:os.system [echo pwned]"


def vl3data(*argv: str) -> subprocess.CompletedProcess:
    """The real command, in a process of its own."""
    return subprocess.run(
        [sys.executable, "-m", "vl3data.cli", *argv],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=300,
    )


@pytest.mark.parametrize(
    "override,field",
    [
        ("filters.max_pixels=.inf", "filters.max_pixels"),
        ("filters.max_pixels=-.inf", "filters.max_pixels"),
        ("filters.max_pixels=.nan", "filters.max_pixels"),
        ("filters.max_aspect=.nan", "filters.max_aspect"),
        ("input.max_partitions=.inf", "input.max_partitions"),  # int | None
        ("input.extensions=[jpg", "input.extensions"),
        ("input.extensions={a: [b}", "input.extensions"),
        (f"input.path={TAG}", "input.path"),
        ("input.path=!!python/object:pathlib.PurePosixPath {}", "input.path"),
    ],
)
def test_hostile_overrides_name_the_field(override, field):
    with pytest.raises(ConfigError) as err:
        load_config(CurateConfig, CURATE, [override])
    assert err.value.field == field
    assert f"'{field}'" in str(err.value)


@pytest.mark.parametrize(
    "text,field",
    [
        ("filters:\n  max_pixels: .inf\n", "filters.max_pixels"),
        ("filters:\n  max_pixels: .nan\n", "filters.max_pixels"),
        ("filters:\n  min_side: .NaN\n", "filters.min_side"),
    ],
)
def test_non_finite_numbers_in_a_yaml_name_the_field(tmp_path, text, field):
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(CurateConfig, [CURATE, overlay])
    assert err.value.field == field


@pytest.mark.parametrize(
    "text,where",
    [
        (f"input:\n  path: {TAG}\n", "line 2"),
        ("filters:\n  max_pixels: [1\n", "line 3"),
        ("input: {path: x\n", "line 2"),
    ],
)
def test_a_tag_or_bad_syntax_in_a_yaml_names_the_file_and_line(tmp_path, text, where):
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(CurateConfig, [CURATE, overlay])
    assert str(overlay) in str(err.value) and where in str(err.value)


def test_recipes_refuse_tags_and_bad_syntax_too(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"stage: s\nseed: {TAG}\ngroups: []\n")
    with pytest.raises(ConfigError) as err:
        load_recipe(recipe)
    assert str(recipe) in str(err.value) and "line 2" in str(err.value)
    recipe.write_text("stage: s\nseed: 0\ngroups: [{name: g, sources: []}]\n")
    for override, field in (("seed=[1", "seed"), (f"stage={TAG}", "stage"), ("seed=.inf", "seed")):
        with pytest.raises(ConfigError) as err:
            load_recipe(recipe, [override])
        assert err.value.field == field, override


@pytest.mark.parametrize(
    "override,field",
    [
        ("filters.max_pixels=.inf", "filters.max_pixels"),
        ("filters.max_pixels=.nan", "filters.max_pixels"),
        ("input.extensions=[jpg", "input.extensions"),
        (f"input.path={TAG}", "input.path"),
    ],
)
def test_the_command_refuses_them_in_one_line(tmp_path, override, field):
    out = tmp_path / "out"
    run = vl3data("curate", str(CURATE), "--set", override, "--set", f"output={out}")
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr and "pwned" not in run.stdout
    assert len(run.stderr.strip().splitlines()) == 1 and f"'{field}'" in run.stderr
    assert not out.exists()


def test_report_refuses_a_folder_that_is_not_a_shard_set(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.txt").write_text("not a shard set")
    run = vl3data("report", str(tmp_path / "photos"))
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and str(tmp_path / "photos") in lines[0] and "shard set" in lines[0]
    assert sorted(p.name for p in (tmp_path / "photos").iterdir()) == ["a.txt"]


def test_a_missing_input_leaves_no_output_folder(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(
        [
            "curate",
            str(CURATE),
            "--set",
            f"input.path={tmp_path / 'nope'}",
            "--set",
            f"output={out}",
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1 and str(tmp_path / "nope") in err
    assert not out.exists()


def test_a_missing_input_keeps_an_output_folder_that_was_there(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    code = main(
        [
            "curate",
            str(CURATE),
            "--set",
            f"input.path={tmp_path / 'nope'}",
            "--set",
            f"output={out}",
            "--no-progress",
        ]
    )
    assert code == 1
    assert (out / "mine.txt").read_text() == "keep me"


def test_version():
    run = vl3data("--version")
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == f"vl3data {importlib.metadata.version('vl3data')}"
