"""Fixtures of the model tests."""

from __future__ import annotations

import json

import pytest

# ---- collator and DiffFP fixtures (tests/model/test_collate.py, test_diffp.py) -------------
# A tiny VideoLlama3Processor (the repo's tiny Qwen2 tokenizer and chat template), a tiny
# VideoLlama3ForConditionalGeneration sized to it, and real video frames sampled at 1 fps.

VL3_FRAMES = {"max_frames": 16, "max_side": 224}  # 1 fps, as video_prep samples them


@pytest.fixture(scope="session")
def vl3_tiny_processor(tmp_path_factory):
    """The processor exactly as ``write_tiny_videollama3_processor`` writes it (small caps:
    at most 3136 pixels per image, 3136 per whole video)."""
    from transformers import AutoProcessor

    from vl3data.tiny_models import write_tiny_videollama3_processor

    return AutoProcessor.from_pretrained(
        write_tiny_videollama3_processor(tmp_path_factory.mktemp("vl3_tiny_processor"))
    )


@pytest.fixture(scope="session")
def vl3_processor(vl3_tiny_processor):
    """The same tokenizer and chat template with generous pixel caps (transformers' image
    default; a whole video as large as the paper's 10240-token budget), so the collator's
    visual-token budget is what binds."""
    from transformers import (
        VideoLlama3ImageProcessor,
        VideoLlama3Processor,
        VideoLlama3VideoProcessor,
    )

    from manifests.chat import CHAT_TEMPLATE

    return VideoLlama3Processor(
        image_processor=VideoLlama3ImageProcessor(
            size={"shortest_edge": 28 * 28, "longest_edge": 28 * 28 * 1280}
        ),
        video_processor=VideoLlama3VideoProcessor(
            size={"shortest_edge": 28 * 28, "longest_edge": 28 * 28 * 10240}
        ),
        tokenizer=vl3_tiny_processor.tokenizer,
        chat_template=CHAT_TEMPLATE,
    )


@pytest.fixture(scope="session")
def vl3_forward_model(vl3_processor):
    """A tiny random ``VideoLlama3ForConditionalGeneration`` (1-layer vision tower of width 32,
    2-layer Qwen2 of width 64) over the tiny tokenizer's vocabulary."""
    import torch
    from transformers import VideoLlama3Config, VideoLlama3ForConditionalGeneration

    tok = vl3_processor.tokenizer
    cfg = VideoLlama3Config(
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "patch_size": 14,
        },
        text_config={
            "model_type": "qwen2",
            "vocab_size": len(tok),
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "max_position_embeddings": 4096,
            "bos_token_id": None,
            "eos_token_id": tok.eos_token_id,
            "pad_token_id": tok.pad_token_id,
        },
        image_token_id=vl3_processor.image_token_id,
        video_token_id=vl3_processor.video_token_id,
    )
    torch.manual_seed(0)
    return VideoLlama3ForConditionalGeneration(cfg).eval()


@pytest.fixture(scope="session")
def video_samples() -> dict:
    """Real videos sampled at 1 fps by ``video_prep`` (name -> ``Sampled``): ``bikes`` (10 s,
    scene cuts) and ``vtest`` (a fixed camera; its 79 s uniformly subsampled to 16 frames)."""
    from video_prep.frames import sample_video
    from video_prep.probe import probe_video
    from video_prep.sample_videos import real_videos

    found = real_videos()
    missing = {"bikes", "vtest"} - set(found)
    if missing:
        pytest.skip(f"sample videos not installed: {sorted(missing)}")
    return {
        name: sample_video(found[name], probe_video(found[name]), **VL3_FRAMES)
        for name in ("bikes", "vtest")
    }


def video_sample(key: str, frames: list[bytes], record: dict) -> dict:
    """A raw mixture sample as a video shard set holds it: ``{key}.fNNNN.jpg`` members named
    in the record's ``frames``, the record as ``json`` bytes."""
    names = [f"{key}.f{i:04d}.jpg" for i in range(len(frames))]
    sample = {"__key__": key, "json": json.dumps({"video": [key], "frames": names, **record})}
    for name, data in zip(names, frames, strict=True):
        sample[name.split(".", 1)[1]] = data
    sample["json"] = sample["json"].encode()
    return sample


@pytest.fixture(scope="session")
def vl3_video_sample():
    """:func:`video_sample`, for tests that build video samples."""
    return video_sample


# ---- end of collator and DiffFP fixtures ----------------------------------------------------


# ---- trainer fixtures (tests/model/test_stages.py, test_train.py) ---------------------------
# A tiny shard set written here (real photos with captions, one short video of real photos,
# text-only conversations in JSONL), a recipe over it, a tiny VideoLLaMA3 checkpoint built
# offline from the `tiny` preset, and a trainer config over them.

TRAIN_CAPTIONS = {
    "astronaut": "An astronaut in a white suit stands before a flag.",
    "chelsea": "A ginger cat with green eyes looks at the camera.",
    "coffee": "A cup of coffee with a leaf drawn in the foam.",
    "rocket": "A rocket stands on the launch pad.",
    "china": "A temple with a curved roof among trees.",
    "flower": "A pink flower in a green garden.",
}
TRAIN_TEXT = [
    ("What is the capital of France?", "The capital of France is Paris."),
    ("How many legs does a spider have?", "A spider has eight legs."),
]
TRAIN_SAMPLES = len(TRAIN_CAPTIONS) + 1 + len(TRAIN_TEXT)  # images, one video, texts


def _small_jpeg(photo, side: int = 64) -> bytes:
    import numpy as np
    from PIL import Image

    from vl3data.sample_media import jpeg_bytes

    im = Image.fromarray(photo)
    im.thumbnail((side, side))
    return jpeg_bytes(np.asarray(im))


def write_train_sets(root, photos) -> dict:
    """An image shard set (captioned photos), a video shard set (3 frames at 1 fps: the same
    photo twice, then another) and a text JSONL; returns their paths."""
    from manifests.dataset import write_dataset_json
    from manifests.shards import ShardSetWriter

    paths = {"images": root / "images", "video": root / "video", "text": root / "text.jsonl"}
    w = ShardSetWriter(paths["images"], "main", max_count=4, max_bytes=10**9)
    for name, caption in TRAIN_CAPTIONS.items():
        rec = {
            "image": [f"{name}.jpg"],
            "conversations": [
                {"from": "human", "value": "<image>\nDescribe the image briefly."},
                {"from": "gpt", "value": caption},
            ],
        }
        w.write(
            {"__key__": name, "jpg": _small_jpeg(photos[name]), "json": json.dumps(rec).encode()}
        )
    write_dataset_json(
        paths["images"],
        name="train_images",
        modality="image",
        task="caption",
        shards=w.close(),
        config={},
        config_hash="test",
    )
    w = ShardSetWriter(paths["video"], "main", max_count=4, max_bytes=10**9)
    frames = [_small_jpeg(photos[n]) for n in ("chelsea", "chelsea", "coffee")]
    names = [f"clip.f{i:04d}.jpg" for i in range(len(frames))]
    rec = {
        "video": ["clip"],
        "frames": names,
        "timestamps": [0.0, 1.0, 2.0],
        "conversations": [
            {"from": "human", "value": "<video>\nDescribe the video."},
            {"from": "gpt", "value": "A cat sits still, then a cup of coffee appears."},
        ],
    }
    sample = {"__key__": "clip", "json": json.dumps(rec).encode()}
    sample.update({n.split(".", 1)[1]: f for n, f in zip(names, frames, strict=True)})
    w.write(sample)
    write_dataset_json(
        paths["video"],
        name="train_video",
        modality="video",
        task="caption",
        shards=w.close(),
        config={},
        config_hash="test",
    )
    lines = [
        json.dumps({"conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": a}]})
        for q, a in TRAIN_TEXT
    ]
    paths["text"].write_text("\n".join(lines) + "\n")
    return paths


@pytest.fixture(scope="session")
def train_recipe(tmp_path_factory, photos):
    """A stage recipe over :func:`write_train_sets`: every sample once per epoch."""
    import yaml

    root = tmp_path_factory.mktemp("train_sets")
    paths = write_train_sets(root, photos)
    recipe = {
        "stage": "test_train",
        "seed": 3,
        "groups": [
            {
                "name": "captions",
                "sources": [
                    {"name": "images", "path": str(paths["images"]), "modality": "image"},
                    {"name": "video", "path": str(paths["video"]), "modality": "video"},
                ],
            },
            {
                "name": "text",
                "sources": [{"name": "text", "path": str(paths["text"]), "modality": "text"}],
            },
        ],
    }
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.fixture(scope="session")
def tiny_vl3_checkpoint(tmp_path_factory, train_recipe):
    """The `tiny` preset with a BPE trained on the recipe's text, saved as a checkpoint
    directory (what ``model.init`` points at)."""
    from model.build import build_from_preset, save_checkpoint
    from model.tokenizer import corpus_from_recipes

    model, processor = build_from_preset("tiny", corpus=lambda: corpus_from_recipes([train_recipe]))
    return save_checkpoint(model, processor, tmp_path_factory.mktemp("tiny_vl3") / "init")


def write_train_config(path, recipe, output, init="", **stage_kw) -> str:
    """A trainer YAML: the tiny preset, every stage over ``recipe``; ``stage_kw`` sets fields
    of every stage (e.g. ``steps=4``)."""
    import yaml

    stage = {"recipe": str(recipe), "steps": 4, **stage_kw}
    cfg = {
        "name": "test",
        "output": str(output),
        "model": {"preset": "tiny", "init": str(init)},
        "train": {"batch_size": TRAIN_SAMPLES, "log_every": 100, "checkpoint_every": 100},
        **{f"stage{n}": dict(stage) for n in (1, 2, 3, 4)},
    }
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


@pytest.fixture(scope="session")
def train_config_writer():
    """:func:`write_train_config`, for the trainer tests."""
    return write_train_config


#: what the two-rank runs add to the trainer config: 3 samples per rank a step, about one
#: sample per micro-batch (accumulation under DDP)
TWO_RANK_ARGS = ["--set", "train.batch_size=3", "--set", "data.tokens_per_batch=64"]


@pytest.fixture(scope="session")
def torchrun_two_ranks(tmp_path_factory, train_recipe, tiny_vl3_checkpoint):
    """Stages 1-2 (3 steps each, from the tiny checkpoint) trained by two gloo ranks under
    ``torchrun``, run once: tests/model/test_train.py checks the ranks stayed in sync, and
    tests/model/test_ray_train.py that Ray Train's run equals it. Returns the output folder."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = tmp_path_factory.mktemp("torchrun")
    out = root / "ddp"
    config = write_train_config(
        root / "ddp.yaml", train_recipe, out, init=tiny_vl3_checkpoint, steps=3, lr_scale=300
    )
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd += ["-m", "model.train", config, "--stage", "1-2", *TWO_RANK_ARGS]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


# ---- end of trainer fixtures ----------------------------------------------------------------
