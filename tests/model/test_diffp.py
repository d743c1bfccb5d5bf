"""DiffFP on real footage sampled at 1 fps: a fixed camera loses most of its video tokens, a
cut-heavy video few; the placeholders always match the compression mask."""

from __future__ import annotations

import json

import pytest
import torch

from manifests.chat import processor_inputs
from model.collate import CollateConfig, Collator
from model.diffp import HF_BUILTIN_THRESHOLD, HF_SCALE, compression_mask, grey_levels

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
    """At 0.1 on normalised pixels (12.75 grey levels; not the default, see below)."""
    kept = {}
    for name, sample in real.items():
        off = encode(vl3_processor, sample)
        on = encode(vl3_processor, sample, use_token_compression=True, diff_threshold=0.1)
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
    """A number is a mean |Δ| of the model's normalised pixels per 2x2-merged token."""
    enc = encode(vl3_processor, real["vtest"], use_token_compression=True, diff_threshold=0.1)
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


def _two_frames(grey_a: tuple[int, int], grey_b: tuple[int, int]):
    """Pixels as the processor lays them out for a 2-frame video of two 2x2-merged tokens
    (grid 2x2x4, patches of token 0 then token 1), each token a flat grey, normalised as
    SigLIP's processor does (g / 127.5 - 1)."""
    rows = []
    for frame in range(2):
        for grey in (grey_a[frame], grey_b[frame]):
            rows += [torch.full((3 * 14 * 14,), grey / 127.5 - 1.0)] * 4
    return torch.stack(rows), torch.tensor([[2, 2, 4]]), torch.tensor([2])


@pytest.mark.parametrize(
    "setting,grey",  # the reading and its threshold in grey levels (0-255)
    [("videollama3", 0.05), ("rlt", 5.76), (0.1, 12.75)],
)
def test_threshold_readings_in_grey_levels(vl3_processor, setting, grey):
    """VideoLLaMA3's code keeps a token whose pixels change by more than 0.05 grey levels, RLT's
    reading by more than ~5.8, 0.1 on normalised pixels by more than 12.75."""
    from model.diffp import threshold_value

    value = threshold_value(setting)
    assert grey_levels(value) == pytest.approx(grey, abs=0.01)
    for step in (grey * 0.9, grey * 1.1):  # token 0 changes by `step` (token 1 by 100 levels)
        # grey levels need not be whole here: the pixels are built, not decoded
        pixels, grid, merges = _two_frames((100, 100 + step), (20, 120))
        mask = compression_mask(vl3_processor.video_processor, pixels, grid, merges, value)
        assert mask.tolist() == [True, True, step > grey, True], (setting, step)


def test_the_default_is_videollama3s_code(vl3_processor, video_samples, vl3_video_sample):
    """Without a threshold the collator and the trainer use the rule of VideoLLaMA3's code and
    of transformers' port (mean |Δ| x 255 > 0.1): the processor's own compressed prompt."""
    from model.config import ModelConfig, TrainConfig
    from model.stream import collate_config

    assert CollateConfig().diff_threshold == HF_BUILTIN_THRESHOLD / HF_SCALE
    cfg = TrainConfig(model=ModelConfig(preset="tiny"))
    assert cfg.data.diff_threshold == "videollama3"
    assert collate_config(cfg, 3).diff_threshold == HF_BUILTIN_THRESHOLD / HF_SCALE
    frames = video_samples["vtest"].frames[:6]  # a fixed camera: 0.1 would prune it heavily
    rec = {"timestamps": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0], "conversations": CONVERSATION}
    sample = vl3_video_sample("fix0", frames, rec)
    ours = Collator(vl3_processor, CollateConfig(use_token_compression=True)).encode(sample)
    kwargs = {"videos_kwargs": {"size": dict(vl3_processor.video_processor.size)}}
    theirs = processor_inputs(json.loads(sample["json"]), sample, vl3_processor, **kwargs)
    assert torch.equal(ours["video_compression_mask"], theirs["video_compression_mask"])
    assert torch.equal(ours["input_ids"], theirs["input_ids"][0])


@pytest.mark.parametrize(
    "value,expected",
    [("videollama3", "videollama3"), ("RLT", "rlt"), ("0.1", 0.1), ("0", 0.0), (0.02, 0.02)],
)
def test_threshold_settings(value, expected):
    from manifests.configs import load_config
    from model.config import TrainConfig

    cfg = load_config(TrainConfig, None, [f"data.diff_threshold={value}"])
    assert cfg.data.diff_threshold == expected


@pytest.mark.parametrize("value", ["paper", "-0.1", ".inf", "nan"])
def test_a_bad_threshold_names_the_field_and_the_choices(value):
    from manifests.configs import ConfigError, load_config
    from model.config import TrainConfig

    with pytest.raises(ConfigError) as exc:
        load_config(TrainConfig, None, [f"data.diff_threshold={value}"])
    assert exc.value.field == "data.diff_threshold"
    assert "videollama3" in str(exc.value) and "rlt" in str(exc.value)
