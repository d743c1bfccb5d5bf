"""`vl3data build --plan --pilot N`: the build run for real on the first N partitions of every
raw input under OUT/.pilot, and the plan of the real build priced at the pilot's rates."""

from __future__ import annotations

import json

import pytest

from manifests.configs import ConfigError, load_config
from manifests.ledger import read_ledger
from vl3data import cli
from vl3data.builder.config import BuildConfig
from vl3data.builder.pilot import pilot_config
from vl3data.builder.plan import make_plan

NODES = ["curate", "video.patterns", "mix.stage1", "mix.stage3"]


def test_a_pilot_prices_a_build_that_never_ran(
    small_build, small_inputs, ray_local, tmp_path, capsys
):
    path = small_build()
    out = tmp_path / "out"
    assert cli.main(["build", str(path), "--plan", "--pilot", "1"]) == 0
    printed = capsys.readouterr().out
    assert "pilot: the first 1 partition(s)" in printed and ".pilot" in printed
    assert "rates of 4 node(s) measured by the pilot" in printed
    pilot = out / ".pilot"
    # one partition of each raw input: 6 pool files (input.partition_size=6), 2 videos
    assert len(read_ledger(pilot / "curated")) == 6
    assert len(read_ledger(pilot / "videos" / "caption")) == 2
    pool = sum(1 for p in (small_inputs / "pool").rglob("*") if p.is_file())
    assert pool > 6
    # nothing of the real build was written
    assert sorted(p.name for p in out.iterdir()) == [".pilot"]

    cfg = load_config(BuildConfig, str(path))
    rows = {r.node: r for r in make_plan(cfg, pilot_state=str(pilot / ".build"))}
    assert sorted(rows) == sorted(NODES)
    for r in rows.values():
        assert r.run and r.rate and r.rate_source.startswith("pilot: "), r
        assert r.seconds is not None and r.seconds > 0
    assert rows["curate"].inputs > 6  # the real pool, priced at the pilot's rate
    marker = json.loads((pilot / ".build" / "curate.json").read_text())
    assert rows["curate"].rate == pytest.approx(marker["measured"]["inputs"] / marker["wall_s"])
    # the same pilot again: up to date, nothing reruns, the same rates
    assert cli.main(["build", str(path), "--plan", "--pilot", "1"]) == 0
    assert json.loads((pilot / ".build" / "curate.json").read_text()) == marker


def test_a_pilot_refuses_to_write_outside_paths_out(small_build, tmp_path):
    path = small_build(lambda d: d["videos"][0].update(output=str(tmp_path / "elsewhere")))
    with pytest.raises(ConfigError) as err:
        pilot_config(str(path), [], 1)
    assert err.value.field == "video.patterns output"
    assert "would write into the real build" in str(err.value)
    assert cli.main(["build", str(path), "--pilot", "1"]) == 2  # --pilot goes with --plan
