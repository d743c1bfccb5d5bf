"""``--plan``: counts, expected outputs, time and worker-hours from measured rates, and GPU
figures from a rates file; checked against rates written here, so every figure is known."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from manifests.configs import ConfigError, load_config
from vl3data.builder.config import BuildConfig
from vl3data.builder.plan import format_plan, load_gpu_rates, make_plan
from vl3data.builder.run_node import write_marker

ROOT = Path(__file__).parents[2]
TEXT = ROOT / "mixtures" / "recipes" / "demo_text.jsonl"


@pytest.fixture()
def known(tmp_path):
    """A curate -> mix build whose earlier runs measured: curate 100 images in 50 s on 4 CPUs
    (40 kept), the mixture 10 samples in 2 s."""
    pool = tmp_path / "pool"
    pool.mkdir()
    for i in range(30):
        (pool / f"{i:03d}.jpg").write_bytes(b"x")
    (pool / "notes.txt").write_text("not an image")
    doc = yaml.safe_load((Path(__file__).parent / "small_build.yaml").read_text())
    doc["paths"] = {"data": str(tmp_path), "out": str(tmp_path / "out")}
    del doc["videos"]
    doc["mixtures"] = doc["mixtures"][:1]
    path = tmp_path / "build.yaml"
    path.write_text(yaml.safe_dump(doc))
    cfg = load_config(BuildConfig, str(path))
    write_marker(
        cfg.state,
        "curate",
        {
            "state": "done",
            "fingerprint": "old",
            "wall_s": 50.0,
            "machine": {"cpus": 4, "gpus": 0},
            "measured": {"unit": "images", "inputs": 100, "outputs": 40},
        },
    )
    write_marker(
        cfg.state,
        "mix.stage1",
        {
            "state": "done",
            "fingerprint": "old",
            "wall_s": 2.0,
            "machine": {"cpus": 4, "gpus": 0},
            "cpus": 1,  # a mixture is one process (run_node.cpus_used)
            "measured": {"unit": "samples", "inputs": 10, "outputs": 10},
        },
    )
    rates = tmp_path / "rates.yaml"
    rates.write_text(
        yaml.safe_dump(
            {
                "gpu": "Some GPU",
                "usd_per_gpu_hour": {"value": 2.0, "source": "a price page"},
                "nodes": {"curate": {"unit": "images", "per_gpu_s": 10.0, "source": "a paper"}},
            }
        )
    )
    return cfg, path, rates


def test_plan_figures_from_measured_rates(known):
    cfg, _, rates = known
    rows = {r.node: r for r in make_plan(cfg, target_gpus=4, gpu_rates=str(rates))}
    cur = rows["curate"]
    assert cur.run and cur.why == "not built yet"
    assert cur.inputs == 30  # image files only
    assert cur.rate == pytest.approx(2.0) and cur.outputs == pytest.approx(12.0)
    assert cur.seconds == pytest.approx(15.0)
    assert cur.worker_hours == pytest.approx(15.0 * 4 / 3600)
    mix = rows["mix.stage1"]
    assert mix.workers == 1 and mix.worker_hours == pytest.approx(mix.seconds / 3600)
    assert cur.gpu["gpu_hours"] == pytest.approx(30 / 10 / 3600)
    assert cur.gpu["seconds"] == pytest.approx(30 / 10 / 4)
    assert cur.gpu["usd"] == pytest.approx(30 / 10 / 3600 * 2.0)
    texts = sum(1 for line in TEXT.read_text().splitlines() if line.strip())
    mix = rows["mix.stage1"]
    assert mix.inputs == 12 + texts  # curate's expected output + the text file
    assert mix.seconds == pytest.approx((12 + texts) / 5.0)
    assert "CPU work" in mix.gpu["why"]


def test_plan_cli_prices_a_scale_not_on_disk(known, capsys):
    from vl3data.cli import main

    _, path, rates = known
    code = main(
        [
            "build",
            str(path),
            "--plan",
            "--inputs",
            "curate=1_000_000",
            "--target-gpus",
            "8",
            "--gpu-rates",
            str(rates),
        ]
    )
    text = capsys.readouterr().out
    assert code == 0
    line = next(x for x in text.splitlines() if x.startswith("curate"))
    assert "1,000,000 images" in line and "400,000" in line  # 40 % kept
    assert "138.9 h" in line and "555.5556" in line  # 500,000 s; x 4 CPUs
    assert "27.778 GPU-hours, 3.5 h on 8 GPUs, $55.56" in text
    assert not (path.parent / "out" / "curated").exists()


def test_a_node_never_run_has_no_made_up_figures(known, tmp_path):
    cfg, _, _ = known
    (Path(cfg.state) / "curate.json").unlink()
    rows = {r.node: r for r in make_plan(cfg)}
    assert rows["curate"].inputs == 30
    assert rows["curate"].seconds is None and rows["curate"].outputs is None
    assert "no rate yet for curate" in format_plan(cfg, list(rows.values()))


def test_shipped_gpu_rates_name_their_sources():
    rates = load_gpu_rates(ROOT / "configs" / "gpu_rates.yaml")
    assert rates.nodes and all(r.source for r in rates.nodes.values())
    assert any(r.per_gpu_s for r in rates.nodes.values())


def test_a_rate_without_a_source_is_refused(tmp_path):
    bad = tmp_path / "r.yaml"
    bad.write_text("gpu: X\nnodes:\n  curate: {unit: images, per_gpu_s: 3, source: ''}\n")
    with pytest.raises(ConfigError) as err:
        load_gpu_rates(bad)
    assert err.value.field == "nodes.curate.source"


def test_worker_hours_count_the_cpus_a_node_keeps_busy():
    from vl3data.builder.graph import Node
    from vl3data.builder.run_node import cpus_used

    machine = {"cpus": 16, "gpus": 0}
    assert cpus_used(Node("mix.stage1", "mix", "mix", None, [], {}, "h"), machine) == 1
    assert cpus_used(Node("curate", "curate", "image", None, [], {}, "h"), machine) == 16
    train = Node("train.stage1", "train", "train", None, [], {}, "h", stage=1)
    assert cpus_used(train, machine) == 16  # torch threads across the machine
    train.options = {"workers": 4, "cpus_per_worker": 2.0}
    assert cpus_used(train, machine) == 8.0
