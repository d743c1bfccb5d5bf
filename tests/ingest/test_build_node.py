"""An import is a build node of its own (kind ``import``): a mixture reading its output gets the
edge from the paths, as for every other job."""

from __future__ import annotations

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
