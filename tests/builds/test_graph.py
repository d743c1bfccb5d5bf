"""The graph from a build config: nodes, edges from paths, targets, and config errors that name
the field before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from manifests.configs import ConfigError, load_config
from vl3data.builder.config import BuildConfig
from vl3data.builder.graph import make_graph, select

DEMO = Path(__file__).parents[2] / "configs" / "build_demo.yaml"


def demo_graph(*sets: str):
    return make_graph(load_config(BuildConfig, str(DEMO), list(sets)))


def test_edges_follow_the_paths_jobs_read_and_write(tmp_path):
    nodes = demo_graph(f"paths.out={tmp_path}")
    deps = {n.name: sorted(n.deps) for n in nodes}
    assert deps["curate"] == [] and deps["video.demo"] == []
    assert deps["recaption"] == ["curate"]
    assert deps["mix.stage1"] == ["recaption"]
    assert deps["mix.stage3"] == ["recaption", "video.demo"]
    assert deps["mix.stage4"] == ["recaption", "video.demo"]  # Table 4's image-only group
    assert deps["train.stage2"] == ["mix.stage2", "train.stage1"]
    # the BPE tokenizer is trained on every stage's text, so stage 1 reads all four mixtures
    assert deps["train.stage1"] == ["mix.stage1", "mix.stage2", "mix.stage3", "mix.stage4"]
    order = [n.name for n in nodes]
    for n in nodes:  # each node after what it reads
        assert all(order.index(d) < order.index(n.name) for d in n.deps)
    rec = next(n for n in nodes if n.name == "recaption")
    assert rec.outputs == [str(tmp_path / "demo_syn7m_captions" / k) for k in ("short", "detailed")]
    assert rec.job.input.path == str(tmp_path / "demo_syn7m")
    train2 = next(n for n in nodes if n.name == "train.stage2")
    assert train2.job.stage(2).recipe == str(tmp_path / "demo_mix" / "stage2" / "recipe.yaml")
    mix3 = next(n for n in nodes if n.name == "mix.stage3")
    paths = {src.name: src.path for _, _, src in mix3.job.sources()}
    assert paths["demo_video_grounding"] == str(tmp_path / "demo_videos" / "grounding")
    assert paths["demo_text"].endswith("mixtures/recipes/demo_text.jsonl")


def test_config_hash_ignores_where_outputs_go_but_not_what_decides_them(tmp_path):
    for data in ("d1", "d2"):  # two data roots, each with local models
        for model in ("open_clip", "blip2", "internvl"):
            (tmp_path / data / "models" / model).mkdir(parents=True)

    def hashes(*sets):
        return {n.name: n.config_hash for n in demo_graph(*sets)}

    a = hashes(f"paths.out={tmp_path / 'a'}", f"paths.data={tmp_path / 'd1'}")
    assert a == hashes(f"paths.out={tmp_path / 'b'}", f"paths.data={tmp_path / 'd1'}")
    # input and local model paths are fingerprinted as inputs, not hashed
    assert a == hashes(f"paths.out={tmp_path / 'a'}", f"paths.data={tmp_path / 'd2'}")
    other = demo_graph(f"paths.data={tmp_path / 'd1'}")
    assert other[0].inputs["clip"] == str(tmp_path / "d1" / "models" / "open_clip")
    changed = hashes(f"paths.data={tmp_path / 'd1'}", "paths.aesthetic=other-weights")
    assert changed["curate"] != a["curate"] and changed["video.demo"] == a["video.demo"]


def test_targets_select_a_group_and_what_it_needs():
    nodes = demo_graph()
    assert [n.name for n in select(nodes, ["syn7m"])] == ["curate", "recaption"]
    assert [n.name for n in select(nodes, ["mix.stage4"])] == [
        "curate",
        "recaption",
        "video.demo",
        "mix.stage4",
    ]
    # everything but the raw-video node, which no mixture reads (yet)
    assert {n.name for n in nodes} - {n.name for n in select(nodes, ["train"])} == {
        "video.demo_raw"
    }
    with pytest.raises(ConfigError, match="names no node"):
        select(nodes, ["nope"])


def write(tmp_path: Path, edit) -> str:
    doc = yaml.safe_load(DEMO.read_text())
    edit(doc)
    path = tmp_path / "b.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


@pytest.mark.parametrize(
    "edit,field,words",
    [
        (lambda d: d["curate"]["set"].append("input.path=${nope}"), "curate.set[4]", "${nope}"),
        (lambda d: d["videos"].insert(1, dict(d["videos"][0])), "videos[1].name", "used twice"),
        (lambda d: d["videos"][0].update(job="videos"), "videos[0].job", "not one of"),
        (lambda d: d["recaption"]["set"].append("output=x"), "recaption.set[2]", "sets output"),
        (lambda d: d["mixtures"].pop(1), "train.stages", "stage 2 has no mixture"),
        (lambda d: d.update(max_parallel=0), "max_parallel", "at least 1"),
        (lambda d: d["mixtures"][0].update(stage=5), "mixtures[0].stage", "1, 2, 3 or 4"),
        (lambda d: d["train"].update(workers=-1), "train.workers", "0 (in-process)"),
        (lambda d: d["train"].update(workers=2, num_gpus=1), "train.num_gpus", "use_gpu"),
        (lambda d: d["train"].update(use_gpu=True), "train.use_gpu", "Ray Train workers"),
    ],
)
def test_bad_build_fields_are_named(tmp_path, edit, field, words):
    with pytest.raises(ConfigError) as err:
        load_config(BuildConfig, write(tmp_path, edit))
    assert err.value.field == field and words in str(err.value)


@pytest.mark.parametrize(
    "edit,field,words",
    [
        (
            lambda d: d["curate"]["set"].append("filters.min_side=-3"),
            "curate (filters.min_side)",
            "",
        ),
        (
            lambda d: d["videos"][0]["set"].append("frames.fps=0"),
            "videos[demo] (frames.fps)",
            "",
        ),
        (
            lambda d: d["mixtures"][0]["sources"].update(nope="x"),
            "mixtures[0].sources.nope",
            "has no source named 'nope'",
        ),
        (
            lambda d: d["videos"][0].update(output="${out}/demo_syn7m/inside"),
            "video.demo.output",
            "writes into curate's output",
        ),
    ],
)
def test_bad_job_configs_fail_the_whole_build_up_front(tmp_path, edit, field, words):
    cfg = load_config(BuildConfig, write(tmp_path, edit))
    with pytest.raises(ConfigError) as err:
        make_graph(cfg)
    assert err.value.field == field and words in str(err.value)


def test_cli_refuses_a_bad_build_before_any_work(tmp_path, capsys):
    from vl3data.cli import main

    out = tmp_path / "out"
    code = main(["build", str(DEMO), "--set", f"paths.out={out}", "--set", "paths.data=/nowhere"])
    err = capsys.readouterr().err
    assert code == 2 and "curate input 'pool'" in err and "/nowhere/demo_pool does not exist" in err
    assert not out.exists()
