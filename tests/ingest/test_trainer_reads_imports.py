"""Imported samples go to the trainer unchanged: the collator (``model.collate``) encodes an
imported image (one and several), video, streaming and text sample through the real
``VideoLlama3Processor``, its visual placeholders matching the pixels."""

from __future__ import annotations

import json

import pytest

from ingest.config import ImportConfig
from ingest.job import run_import
from manifests.configs import load_config
from manifests.dataset import shard_paths
from manifests.shards import iter_samples
from tests.ingest.inputs import turns, videollama3_inputs


@pytest.mark.slow  # transformers' processor and an import with video
def test_the_collator_encodes_every_kind_of_imported_sample(ray_local, photos, tmp_path):
    from transformers import AutoProcessor

    from model.collate import CollateConfig, Collator
    from vl3data.tiny_models import write_tiny_videollama3_processor

    ann, data = videollama3_inputs(tmp_path, photos)
    two = {"image": ["images/a.jpg", "images/a.jpg"], "conversations": turns("Compare.", "Same.")}
    with open(ann, "a") as f:
        f.write(json.dumps(two) + "\n")
    out = tmp_path / "out"
    sets = [f"input.annotations={ann}", f"input.media={data}", f"output={out}"]
    run_import(
        load_config(ImportConfig, "configs/import_videollama3.yaml", [*sets, "frames.max_side=64"]),
        progress=False,
    )
    processor = AutoProcessor.from_pretrained(write_tiny_videollama3_processor(tmp_path / "p"))
    collator = Collator(processor, CollateConfig(max_vision_tokens=256))
    seen = set()
    for modality in ("image", "video", "text"):
        for sample in iter_samples(shard_paths(out / modality)):
            rec = json.loads(sample["json"])
            enc = collator.encode(sample)
            assert enc is not None, (modality, rec["source_key"], collator.skipped)
            kind = "stream" if rec.get("stream") else modality
            if modality == "image":
                kind += f"x{len(rec['image'])}"
                n = int((enc["input_ids"] == processor.image_token_id).sum())
                assert n > 0 and len(enc["image_grid_thw"]) == len(rec["image"])
            seen.add(kind)
    assert seen == {"imagex1", "imagex2", "video", "stream", "text"}
    assert not collator.skipped and not collator.fixed  # no repair left for the trainer
