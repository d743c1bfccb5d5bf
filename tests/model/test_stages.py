"""Stage policies: per stage exactly the right parameters train, at the paper's rates, and the
frozen ones do not move; presets, the config and its validation."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from manifests.configs import ConfigError, load_config
from model.build import load_checkpoint
from model.config import ModelConfig, TrainConfig
from model.presets import PRESETS, get_preset, model_config, parameter_count
from model.stages import (
    GROUPS,
    make_optimizer,
    make_scheduler,
    param_group,
    split_parameters,
)
from model.step import train_step
from model.stream import collate_config

ROOT = Path(__file__).resolve().parents[2]
# DESIGN §1, written out here rather than read from model.stages.PAPER
PAPER = {
    1: {"vision": 1e-5, "projector": 1e-3, "llm": 0.0},
    2: {"vision": 2e-6, "projector": 1e-5, "llm": 1e-5},
    3: {"vision": 2e-6, "projector": 1e-5, "llm": 1e-5},
    4: {"vision": 2e-6, "projector": 1e-5, "llm": 1e-5},
}
IMAGE_MERGE = {1: 1, 2: 1, 3: 1, 4: 2}  # image tokens merged NxN per stage
STEPS = 10  # warm-up: ceil(0.03 * 10) = 1 step


@pytest.fixture(scope="module")
def micro_batches(tiny_vl3_checkpoint, train_recipe):
    """Every sample of the recipe (photos, the video, text-only) as the collator batches it."""
    import mixtures
    from model.collate import Collator

    _, processor = load_checkpoint(tiny_vl3_checkpoint)
    samples = list(mixtures.open_stage(train_recipe))
    cfg = collate_config(TrainConfig(model=ModelConfig(preset="tiny")), 2)
    return Collator(processor, cfg)(samples)


@pytest.mark.parametrize("stage", [1, 2, 3, 4])
def test_stage_trains_exactly_its_groups_at_the_paper_rates(
    stage, tiny_vl3_checkpoint, micro_batches
):
    lrs = TrainConfig().stage(stage).lrs()
    assert lrs == pytest.approx(PAPER[stage])
    model, _ = load_checkpoint(tiny_vl3_checkpoint)
    optimizer = make_optimizer(model, lrs)
    scheduler = make_scheduler(optimizer, STEPS, 0.03)
    groups = split_parameters(model)

    # requires_grad follows the policy; the optimizer holds exactly the trained groups' tensors
    for group, named in groups.items():
        assert named, group
        assert all(p.requires_grad == (PAPER[stage][group] > 0) for _, p in named), group
    held: dict[str, set[int]] = {g: set() for g in GROUPS}
    for pg in optimizer.param_groups:
        assert pg["initial_lr"] == pytest.approx(PAPER[stage][pg["group"]])
        held[pg["group"]] |= {id(p) for p in pg["params"]}
    for group, named in groups.items():
        expected = {id(p) for _, p in named} if PAPER[stage][group] > 0 else set()
        assert held[group] == expected, group
    assert sum(len(pg["params"]) for pg in optimizer.param_groups) == sum(
        len(v) for g, v in groups.items() if PAPER[stage][g] > 0
    )

    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    row = train_step(model, optimizer, scheduler, micro_batches, max_grad_norm=1.0)
    assert math.isfinite(row["loss"]) and row["answer_tokens"] > 0
    assert all(v == 0 for v in row["lr"].values())  # warm-up starts at 0: nothing moved yet
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())
    train_step(model, optimizer, scheduler, micro_batches, max_grad_norm=1.0)
    cosine = 0.5 * (1 + math.cos(math.pi * 1 / (STEPS - 1)))  # after warm-up step and step 1
    for pg in optimizer.param_groups:
        assert pg["lr"] == pytest.approx(PAPER[stage][pg["group"]] * cosine)
    for group, named in groups.items():
        for name, p in named:
            if PAPER[stage][group] > 0:
                assert not torch.equal(before[name], p), f"{name} did not train"
            else:
                assert torch.equal(before[name], p), f"{name} is frozen but changed"


def test_difffp_and_merges_per_stage():
    cfg = TrainConfig(model=ModelConfig(preset="tiny"))
    for stage in (1, 2, 3, 4):
        cc = collate_config(cfg, stage)
        assert cc.use_token_compression == (stage in (3, 4))
        # images merged 2x2 in stage 4 only (paper §3.3; stage4_2b.sh --image_merge_size 2)
        assert (cc.video_merge_size, cc.image_merge_size) == (2, IMAGE_MERGE[stage])
        assert cc.max_vision_tokens == get_preset("tiny").max_vision_tokens


def test_stage_4_merges_image_tokens_2x2(tiny_vl3_checkpoint, photos):
    """The same image sample through each stage's collator: stages 1-3 one token per patch,
    stage 4 one per 2x2 patches (a quarter of the placeholders, the same pixels), and the model
    takes the stage-4 batch."""
    import json

    from PIL import Image

    from model.stream import stage_collator
    from vl3data.sample_media import jpeg_bytes

    model, processor = load_checkpoint(tiny_vl3_checkpoint)
    photo = np.asarray(Image.fromarray(photos["astronaut"]).resize((56, 56)))  # 4x4 patches
    rec = {
        "image": ["a.jpg"],
        "conversations": [
            {"from": "human", "value": "<image>\nDescribe the image."},
            {"from": "gpt", "value": "An astronaut."},
        ],
    }
    sample = {"__key__": "a", "jpg": jpeg_bytes(photo), "json": json.dumps(rec).encode()}
    cfg = TrainConfig(model=ModelConfig(preset="tiny"))
    pads, batches = {}, {}
    for n in (1, 2, 3, 4):
        collator = stage_collator(processor, cfg, n)
        assert processor.image_processor.merge_size == IMAGE_MERGE[n]  # processor agrees
        (mb,) = collator([sample])
        pads[n] = int((mb["input_ids"] == processor.image_token_id).sum())
        assert mb["image_merge_sizes"].tolist() == [IMAGE_MERGE[n]]
        assert mb["image_grid_thw"].tolist() == [[1, 4, 4]]  # the same patches every stage
        batches[n] = mb
    assert pads == {1: 16, 2: 16, 3: 16, 4: 4}
    with torch.no_grad():
        out = model(**batches[4])
    assert torch.isfinite(out.loss)


def test_image_merge_size_is_checked():
    cfg = load_config(TrainConfig, None, ["stage2.image_merge_size=2"])
    assert [cfg.stage(n).image_merge_size for n in (1, 2, 3, 4)] == [1, 2, 1, 2]
    for bad in ("3", "0", "true"):
        with pytest.raises(ConfigError) as exc:
            load_config(TrainConfig, None, [f"stage4.image_merge_size={bad}"])
        assert exc.value.field == "stage4.image_merge_size"


def test_parameter_groups_cover_videollama3(tiny_vl3_checkpoint):
    model, _ = load_checkpoint(tiny_vl3_checkpoint)
    names = [n for n, _ in model.named_parameters()]
    seen = {param_group(n) for n in names}
    assert seen == set(GROUPS)
    assert param_group("module.model.projector.readout.0.weight") == "projector"  # DDP prefix
    assert param_group("lm_head.weight") == "llm"
    with pytest.raises(ValueError, match="no group"):
        param_group("model.something_new.weight")


def test_presets_and_the_2b_layout():
    assert set(PRESETS) == {"tiny", "small", "2b"}
    tiny, small = parameter_count(get_preset("tiny")), parameter_count(get_preset("small"))
    assert tiny["total"] < 200_000 and 2_000_000 < small["total"] < 20_000_000
    assert all(tiny[g] > 0 and small[g] > tiny[g] for g in GROUPS)
    cfg = model_config(get_preset("2b"), 151_665, 151_655, 151_656)  # config only, no weights
    v, t = cfg.vision_config, cfg.text_config
    assert (v.hidden_size, v.num_hidden_layers, v.num_attention_heads, v.patch_size) == (
        1152,
        27,
        16,
        14,
    )
    assert (t.hidden_size, t.num_hidden_layers, t.num_attention_heads) == (1536, 28, 12)
    assert (t.num_key_value_heads, t.intermediate_size, t.vocab_size) == (2, 8960, 151_680)
    assert cfg.tie_word_embeddings
    assert get_preset("2b").max_vision_tokens == 10240 and get_preset("2b").max_length == 16384
    with pytest.raises(KeyError, match="presets: tiny, small, 2b"):
        get_preset("7b")


def test_shipped_config_is_the_paper_schedule():
    cfg = load_config(TrainConfig, ROOT / "configs" / "train_compact.yaml")
    assert cfg.model.preset == "small"
    for n in (1, 2, 3, 4):
        stage = cfg.stage(n)
        assert stage.lr.as_dict() == pytest.approx(PAPER[n])  # lr_scale is the demo's boost
        assert stage.warmup_ratio == 0.03
        assert stage.token_compression == (n in (3, 4))
        assert (ROOT / stage.recipe).is_file()


@pytest.mark.parametrize(
    "override,field",
    [
        ("stage2.lr.llm=-1", "stage2.lr.llm"),
        ("stage3.lr.vision=fast", "stage3.lr.vision"),
        ("stage1.lr={vision: 0, projector: 0}", "stage1.lr"),  # and the LLM frozen: nothing
        ("stage1.steps=0", "stage1.steps"),
        ("stage4.warmup_ratio=1.5", "stage4.warmup_ratio"),
        ("model.preset=huge", "model.preset"),
        ("train.precision=fp8", "train.precision"),
        ("stage2.nope=1", "stage2.nope"),
    ],
)
def test_bad_values_name_their_field(override, field):
    with pytest.raises(ConfigError) as exc:
        load_config(TrainConfig, None, [override])
    assert exc.value.field == field


def test_rates_parse_yaml_exponents_and_overrides():
    cfg = load_config(TrainConfig, None, ["stage2.lr.llm=1e-3", "stage1.lr.llm=2e-6"])
    assert cfg.stage2.lr.llm == 1e-3 and cfg.stage2.lrs()["vision"] == 2e-6  # rest: the paper
    assert cfg.stage1.lrs()["llm"] == 2e-6  # stage 1 may unfreeze the LLM when asked
    cfg = load_config(TrainConfig, None, ["stage3.lr_scale=10", "stage3.token_compression=false"])
    assert cfg.stage3.lrs() == pytest.approx({"vision": 2e-5, "projector": 1e-4, "llm": 1e-4})
    assert cfg.stage3.token_compression is False
    with pytest.raises(ConfigError) as exc:
        cfg.check_runnable([3])
    assert exc.value.field == "stage3.recipe"


def test_a_text_only_micro_batch_in_stage_1(tiny_vl3_checkpoint, train_recipe):
    """With the LLM frozen, a batch without pixels has no trainable path to its loss: the step
    still runs (every trained parameter gets a zero gradient, as DDP needs) and moves nothing."""
    import mixtures
    from model.collate import Collator

    model, processor = load_checkpoint(tiny_vl3_checkpoint)
    texts = [s for s in mixtures.open_stage(train_recipe) if s["__source__"] == "text"]
    cfg = collate_config(TrainConfig(model=ModelConfig(preset="tiny")), 1)
    micro = Collator(processor, cfg)(texts)
    assert micro and not any("pixel_values" in mb for mb in micro)
    optimizer = make_optimizer(model, PAPER[1])
    scheduler = make_scheduler(optimizer, STEPS, 0.0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    row = train_step(model, optimizer, scheduler, micro)
    assert math.isfinite(row["loss"])
    assert all(p.grad is None for p in model.parameters())  # zeroed after the step
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())
