"""DiffFP on real footage sampled at 1 fps: a fixed camera loses most of its video tokens, a
cut-heavy video few; the placeholders always match the compression mask."""

from __future__ import annotations

import json

import pytest
import torch

from manifests.chat import processor_inputs
from model.collate import CollateConfig, Collator
from model.diffp import HF_BUILTIN_THRESHOLD, HF_SCALE

CONVERSATION = [
    {"from": "human", "value": "<video>\nDescribe the video."},
    {"from": "gpt", "value": "A street seen from a fixed camera."},
]


def encode(processor, sample, **cfg):
    c = Collator(processor, CollateConfig(**cfg))
    enc = c.encode(sample)
    assert enc is not None, c.skipped
    return enc


def kept_pads(processor, enc) -> int:
    return int((enc["input_ids"] == processor.video_token_id).sum())


@pytest.fixture(scope="module")
def real(video_samples, vl3_video_sample) -> dict:
    return {
        name: vl3_video_sample(
            name, s.frames, {"timestamps": s.timestamps, "conversations": CONVERSATION}
        )
        for name, s in video_samples.items()
    }


def test_static_camera_is_pruned_cut_heavy_video_is_not(vl3_processor, real):
    kept = {}
    for name, sample in real.items():
        off = encode(vl3_processor, sample)
        on = encode(vl3_processor, sample, use_token_compression=True)
        total = int(off["video_grid_thw"].prod(-1).sum()) // 4
        assert kept_pads(vl3_processor, off) == total == int(off["video_compression_mask"].sum())
        mask = on["video_compression_mask"]
        assert mask.numel() == total  # the vision encoder still sees every patch
        assert kept_pads(vl3_processor, on) == int(mask.sum()) == on["meta"]["video_tokens"]
        assert len(on["input_ids"]) == len(off["input_ids"]) - (total - int(mask.sum()))
        t = int(on["video_grid_thw"][0, 0])
        per_frame = mask.view(t, -1)
        assert per_frame[0].all() and (per_frame.sum(-1) >= 1).all()
        kept[name] = int(mask.sum()) / total
    assert kept["vtest"] < 0.5  # most of a fixed camera's tokens are pruned
    assert kept["bikes"] > 0.8
    assert 1 - kept["bikes"] < (1 - kept["vtest"]) / 4


def test_threshold_is_on_normalised_pixels(vl3_processor, real):
    """The paper's 0.1 on the mean |Δ| of the model's normalised pixels per 2x2-merged token."""
    enc = encode(vl3_processor, real["vtest"], use_token_compression=True)
    t, h, w = enc["video_grid_thw"][0].tolist()
    pixels = enc["pixel_values_videos"].view(t, h * w // 4, -1)
    diff = (pixels[1:] - pixels[:-1]).abs().mean(-1)
    expected = torch.cat([torch.ones(1, h * w // 4, dtype=torch.bool), diff > 0.1])
    expected[expected.sum(-1) == 0, 0] = True  # at least one token a frame
    assert torch.equal(enc["video_compression_mask"], expected.flatten())


def test_builtin_threshold_reproduces_the_processor(vl3_processor, video_samples, vl3_video_sample):
    """At transformers' own threshold our pruning gives exactly the processor's compressed
    prompt; it prunes only repeated pixels (here, repeated frames)."""
    frames = video_samples["bikes"].frames
    repeated = [frames[0], frames[0], frames[0], frames[4], frames[4], frames[7]]
    rec = {"timestamps": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0], "conversations": CONVERSATION}
    sample = vl3_video_sample("rep0", repeated, rec)
    c = Collator(
        vl3_processor,
        CollateConfig(use_token_compression=True, diff_threshold=HF_BUILTIN_THRESHOLD / HF_SCALE),
    )
    ours = c.encode(sample)
    kwargs = {"videos_kwargs": {"size": dict(vl3_processor.video_processor.size)}}
    theirs = processor_inputs(json.loads(sample["json"]), sample, vl3_processor, **kwargs)
    assert vl3_processor.video_processor.use_token_compression  # the processor's default
    assert torch.equal(ours["video_compression_mask"], theirs["video_compression_mask"])
    assert torch.equal(ours["input_ids"], theirs["input_ids"][0])
    mask = ours["video_compression_mask"].view(6, -1)
    assert mask[0].all() and mask[3].all() and mask[5].all()  # new pictures
    assert [int(n) for n in mask.sum(-1)[[1, 2, 4]]] == [1, 1, 1]  # repeats: the minimum
