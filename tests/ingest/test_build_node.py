"""An import is a build node of its own (kind ``import``): a mixture reading its output gets the
edge from the paths, as for every other job."""

from __future__ import annotations

import pytest
import yaml

from manifests.configs import ConfigError, load_config
from vl3data.builder.config import BuildConfig
from vl3data.builder.graph import make_graph, select


def _build(tmp_path, name: str = "llava") -> BuildConfig:
    recipe = tmp_path / "stage3.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "stage": "stage3",
                "groups": [
                    {
                        "name": "general_images",
                        "sources": [{"name": "llava_665k", "path": "x", "modality": "image"}],
                    }
                ],
            }
        )
    )
    doc = {
        "name": "imports",
        "paths": {"out": str(tmp_path / "out"), "data": str(tmp_path)},
        "imports": [
            {
                "name": name,
                "config": ["configs/import_llava.yaml"],
                "set": ["input.annotations=${data}/a.jsonl", "input.media=${data}/images"],
                "output": "${out}/llava",
            }
        ],
        "mixtures": [
            {
                "stage": 3,
                "recipe": str(recipe),
                "sources": {"llava_665k": "${out}/llava/image"},
                "output": "${out}/mix3",
            }
        ],
    }
    path = tmp_path / "build.yaml"
    path.write_text(yaml.safe_dump(doc))
    return load_config(BuildConfig, str(path))


def test_an_import_is_a_node_and_a_mixture_reading_it_depends_on_it(tmp_path):
    nodes = {n.name: n for n in make_graph(_build(tmp_path))}
    node = nodes["import.llava"]
    assert (node.kind, node.group) == ("import", "import")
    assert node.outputs == [str(tmp_path / "out" / "llava" / m) for m in ("image", "text")]
    assert set(node.inputs) == {"annotations", "media"}  # fingerprinted by content
    assert nodes["mix.stage3"].deps == ["import.llava"]
    assert [n.name for n in select(list(nodes.values()), ["import"])] == ["import.llava"]


def test_a_bad_import_name_fails_the_build_config(tmp_path):
    try:
        _build(tmp_path, name="no good")
    except ConfigError as e:
        assert e.field == "imports[0].name"
    else:
        raise AssertionError("a name with a space was accepted")


@pytest.mark.slow  # a real build: the import node runs as a Ray task, then a second build skips it
def test_a_build_runs_an_import_node_and_then_finds_it_fresh(ray_local, photos, tmp_path):
    from tests.ingest.inputs import text_inputs
    from vl3data.builder.execute import run_build

    chat = text_inputs(tmp_path)
    doc = {
        "name": "imports",
        "paths": {"out": str(tmp_path / "out")},
        "imports": [
            {
                "name": "chat",
                "config": ["configs/import_text.yaml"],
                "set": [f"input.annotations={chat}"],
                "output": "${out}/chat",
            }
        ],
    }
    path = tmp_path / "build.yaml"
    path.write_text(yaml.safe_dump(doc))
    cfg = load_config(BuildConfig, str(path))
    lines: list[str] = []
    result = run_build(cfg, ["import"], echo=lines.append)
    assert result.ran == ["import.chat"], lines
    assert result.results["import.chat"]["outputs"] == 7
    assert (tmp_path / "out" / "chat" / "text" / "dataset.json").is_file()
    again = run_build(load_config(BuildConfig, str(path)), ["import"], echo=lines.append)
    assert again.ran == [] and "everything is up to date" in lines[-1]
