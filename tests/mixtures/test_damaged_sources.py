"""A source shard set whose tar is truncated, emptied or otherwise not what its dataset.json
declares: ``vl3data mix --check`` names the shard, ``vl3data mix`` refuses it in one line
(exit 1, no traceback) and leaves nothing half-written behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from mixtures.materialise import write_mixture
from mixtures.recipe import DamagedShard, check_recipe, load_recipe
from tests.mixtures.conftest import source, write_recipe, write_set
from vl3data.cli import main

ROOT = Path(__file__).parent.parent.parent


def damaged_set(tmp_path: Path, how: str) -> tuple[Path, Path]:
    """A fresh 60-sample image set (3 shards) with its middle shard damaged ``how``; returns
    the set and the damaged shard's path."""
    out = write_set(tmp_path / "src", "src", 60, 20, "image")
    doc = json.loads((out / "dataset.json").read_text())
    shard = out / doc["shards"][1]["path"]
    data = shard.read_bytes()
    if how == "truncated":  # cut at 90 % of its size
        shard.write_bytes(data[: int(len(data) * 0.9)])
    elif how == "empty":
        shard.write_bytes(b"")
    elif how == "fewer_samples":  # the right size, but dataset.json says it holds more
        doc["shards"][1]["samples"] += 5
        doc["samples"] += 5
        (out / "dataset.json").write_text(json.dumps(doc))
    elif how == "garbage":  # the right size, not a tar
        shard.write_bytes(b"\x07" * len(data))
    return out, shard


def recipe_over(tmp_path: Path, src: Path) -> Path:
    return write_recipe(
        tmp_path / "r.yaml", [{"name": "g", "sources": [source("src", src, strategy="all")]}]
    )


@pytest.mark.parametrize("how", ["truncated", "empty", "fewer_samples", "garbage"])
def test_check_names_the_damaged_shard(tmp_path, capsys, how):
    src, shard = damaged_set(tmp_path, how)
    assert main(["mix", str(recipe_over(tmp_path, src)), "--check"]) == 1
    err = capsys.readouterr().err
    assert str(shard) in err
    assert "rebuild" in err


@pytest.mark.parametrize("how", ["truncated", "empty", "garbage"])
def test_mix_refuses_a_damaged_source_in_one_line(tmp_path, how):
    src, shard = damaged_set(tmp_path, how)
    out = tmp_path / "mix"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "vl3data.cli",
            "mix",
            str(recipe_over(tmp_path, src)),
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr
    lines = [line for line in run.stderr.splitlines() if str(shard) in line]
    assert len(lines) == 1 and "rebuild" in lines[0], run.stderr
    assert not list(tmp_path.rglob("*.tar.tmp"))
    assert not (out / "dataset.json").exists()


def test_damage_found_only_while_reading_leaves_nothing_behind(tmp_path):
    """Damage that ``check_recipe`` did not look for (here: a tar whose second member's header
    is broken in place after the recipe was checked) is met mid-stream: the mixture stops with
    the shard's path and the fix, and the half-written output is removed."""
    src, _ = damaged_set(tmp_path, "intact")
    recipe = load_recipe(recipe_over(tmp_path, src))
    assert check_recipe(recipe) == []
    doc = json.loads((src / "dataset.json").read_text())
    shard = src / doc["shards"][2]["path"]
    with tarfile.open(shard) as tf:
        second = tf.getmembers()[1].offset
    data = bytearray(shard.read_bytes())
    data[second : second + 100] = b"\xff" * 100  # same size, header checksum now wrong
    shard.write_bytes(bytes(data))
    out = tmp_path / "mix"
    with pytest.raises(DamagedShard) as err:
        write_mixture(recipe, out, shuffle_buffer=4)
    assert str(shard) in str(err.value) and "rebuild" in str(err.value)
    assert not list(tmp_path.rglob("*.tar.tmp"))
    assert not out.exists()
