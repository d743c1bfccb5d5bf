"""The paper's recipes filled for real (issue 16, item 4): LLaVA-style, VideoLLaMA3-style and
text-only inputs imported, then a stage-3-shaped mixture (Table 3's groups: general images,
text-only, general videos) built from them with the mixtures API; every imported set and the
mixture read back by webdataset, Ray Data and Hugging Face ``datasets``."""

from __future__ import annotations

import json

import pytest
import yaml

from ingest.config import ImportConfig
from ingest.job import run_import
from manifests.configs import load_config
from manifests.dataset import read_dataset_json, shard_paths
from manifests.readers import hf_dataset, ray_dataset
from manifests.shards import iter_samples
from mixtures.materialise import materialise
from mixtures.recipe import check_recipe, load_recipe
from tests.ingest.inputs import llava_inputs, text_inputs, videollama3_inputs


def _import(config: str, out, *sets: str) -> dict:
    cfg = load_config(ImportConfig, config, [f"output={out}", *sets])
    return run_import(cfg, progress=False)


@pytest.mark.slow
def test_stage3_mixture_from_imported_sets(ray_local, photos, tmp_path):
    ann, media = llava_inputs(tmp_path / "llava_in", photos)
    _import("configs/import_llava.yaml", tmp_path / "llava", f"input.annotations={ann}",
            f"input.media={media}")  # fmt: skip
    vann, data = videollama3_inputs(tmp_path / "vl3_in", photos)
    _import("configs/import_videollama3.yaml", tmp_path / "vl3", f"input.annotations={vann}",
            f"input.media={data}", "frames.max_side=64")  # fmt: skip
    chat = text_inputs(tmp_path)
    _import("configs/import_text.yaml", tmp_path / "chat", f"input.annotations={chat}")

    imported = [
        tmp_path / "llava" / "image",
        tmp_path / "vl3" / "video",
        tmp_path / "chat" / "text",
    ]
    for out in imported:  # every imported set in the three readers
        ours = {s["__key__"]: s for s in iter_samples(shard_paths(out))}
        assert ours
        assert {r["__key__"] for r in ray_dataset(out).take_all()} == set(ours)
        hf = hf_dataset(out, decode=False, cache_dir=str(tmp_path / "hf"))
        assert {r["__key__"]: r["json"] for r in hf} == {
            k: json.loads(s["json"]) for k, s in ours.items()
        }

    def source(name: str, path, modality: str) -> dict:
        return {"name": name, "path": str(path), "modality": modality, "strategy": "all"}

    groups = [
        {"name": "general_images", "sources": [source("llava", imported[0], "image")]},
        {"name": "text_only", "sources": [source("chat", imported[2], "text")]},
        {"name": "general_videos", "sources": [source("vl3_video", imported[1], "video")]},
    ]
    recipe_path = tmp_path / "stage3.yaml"
    recipe_path.write_text(yaml.safe_dump({"stage": "stage3", "seed": 0, "groups": groups}))
    recipe = load_recipe(recipe_path)
    assert check_recipe(recipe) == []  # modalities agree with each dataset.json
    mix = tmp_path / "mix3"
    doc = materialise(recipe, mix, shuffle_buffer=50, max_count=4)
    expected = sum(read_dataset_json(p)["samples"] for p in imported)
    assert doc["samples"] == expected == 3 + 2 + 7 and doc["modality"] == "mixed"
    hf = hf_dataset(mix, decode=False, cache_dir=str(tmp_path / "hf_mix"))
    kinds = {("video" if r["f0000.jpg"] else "image" if r["jpg"] else "text") for r in hf}
    assert kinds == {"image", "video", "text"}
    assert len(ray_dataset(mix).take_all()) == expected
