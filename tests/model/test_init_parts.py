"""Stage 1 from two separate checkpoints, as the paper starts: a Qwen2 LLM and a SigLIP vision
encoder (tiny, random, of the real classes, saved with save_pretrained), a new projector."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from manifests.configs import ConfigError, load_config
from model.config import TrainConfig
from model.init_parts import PartsError, build_from_parts
from model.train import main


def _vision_cfg(patch: int = 14) -> dict:
    return {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "patch_size": patch,
        "image_size": 56,
    }


@pytest.fixture(scope="module")
def parts(tmp_path_factory, train_recipe):
    """Local checkpoints: a Qwen2 causal LM with a BPE tokenizer, a SiglipVisionModel, a whole
    SiglipModel, and a SigLIP with 16-pixel patches."""
    from transformers import (
        Qwen2Config,
        Qwen2ForCausalLM,
        SiglipConfig,
        SiglipModel,
        SiglipVisionConfig,
        SiglipVisionModel,
    )

    from model.tokenizer import corpus_from_recipes, train_tokenizer

    root = tmp_path_factory.mktemp("parts")
    tok = train_tokenizer(corpus_from_recipes([train_recipe]), 600)
    torch.manual_seed(11)
    qwen = Qwen2ForCausalLM(
        Qwen2Config(
            vocab_size=640,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            tie_word_embeddings=True,
            initializer_range=0.2,
        )
    )
    qwen.save_pretrained(root / "qwen")
    tok.save_pretrained(root / "qwen")
    SiglipVisionModel(SiglipVisionConfig(**_vision_cfg())).save_pretrained(root / "siglip")
    text = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1}
    text |= {"num_attention_heads": 2, "vocab_size": 100}
    SiglipModel(SiglipConfig(vision_config=_vision_cfg(), text_config=text)).save_pretrained(
        root / "siglip_full"
    )
    SiglipVisionModel(SiglipVisionConfig(**_vision_cfg(16))).save_pretrained(root / "siglip16")
    return root


def _vision_weights(path) -> dict[str, torch.Tensor]:
    w = load_file(str(path / "model.safetensors"))
    out = {}
    for k, v in w.items():
        k = k.removeprefix("vision_model.")
        if k.startswith(("text_model.", "logit_", "head.", "embeddings.position_embedding.")):
            continue
        out[k] = v
    return out


@pytest.mark.parametrize("vision", ["siglip", "siglip_full"])
def test_both_towers_carry_over_name_for_name_and_the_projector_is_new(parts, vision):
    model, processor, info = build_from_parts(parts / "qwen", parts / vision, "tiny")
    sd = model.state_dict()
    expected = _vision_weights(parts / vision)
    assert len(expected) > 10
    for k, v in expected.items():
        assert torch.equal(sd[f"model.vision_model.{k}"], v), k
    llm = load_file(str(parts / "qwen" / "model.safetensors"))
    for k, v in llm.items():
        if k.startswith("model."):
            ours = sd["model.language_model." + k.removeprefix("model.")]
            assert torch.equal(ours[: v.shape[0]], v), k
    assert model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    assert info["new"] == ["model.projector.readout"]
    assert info["vision_dropped"] == ["embeddings.position_embedding.weight", "head"]
    # the LLM's tokenizer, with VideoLLaMA3's placeholders; the processor renders an image
    assert processor.image_token_id is not None and len(processor.tokenizer) == info["vocabulary"]
    assert (
        model.config.vision_config.hidden_size == 32
        and model.config.text_config.num_hidden_layers == 2
    )


def test_stage1_trains_from_parts_with_the_llm_frozen(
    tmp_path, parts, train_recipe, train_config_writer
):
    out = tmp_path / "run"
    config = train_config_writer(tmp_path / "t.yaml", train_recipe, out, steps=3, lr_scale=100)
    summary = main(
        [
            config,
            "--stage",
            "1",
            "--set",
            f"model.init_llm={parts / 'qwen'}",
            "--set",
            f"model.init_vision={parts / 'siglip'}",
        ]
    )
    r = summary["stages"][1]
    assert r["done"] and r["start"] == str(out / "init") and r["last_loss"] < r["first_loss"]
    assert json.loads((out / "init" / "parts.json").read_text())["llm"] == str(parts / "qwen")
    final = load_file(str(out / "stage1" / "final" / "model.safetensors"))
    llm = load_file(str(parts / "qwen" / "model.safetensors"))
    for k, v in llm.items():  # stage 1 trains vision and projector only: Qwen's weights stand
        if k.startswith("model.") and "embed_tokens" not in k:
            assert torch.equal(final["model.language_model." + k.removeprefix("model.")], v), k
    vision = _vision_weights(parts / "siglip")
    moved = [k for k, v in vision.items() if not torch.equal(final[f"model.vision_model.{k}"], v)]
    assert moved  # ... and the vision encoder did train


def test_a_checkpoint_that_is_not_the_part_named_is_refused(parts):
    with pytest.raises(PartsError) as e:
        build_from_parts(parts / "qwen", parts / "qwen", "tiny")
    assert e.value.field == "model.init_vision" and "SigLIP" in str(e.value)
    with pytest.raises(PartsError) as e:
        build_from_parts(parts / "siglip", parts / "siglip", "tiny")
    assert e.value.field == "model.init_llm" and "qwen2" in str(e.value)
    with pytest.raises(PartsError) as e:
        build_from_parts(parts / "qwen", parts / "siglip16", "tiny")
    assert e.value.field == "model.init_vision" and "16-pixel patches" in str(e.value)


@pytest.mark.parametrize(
    "sets,field",
    [
        (["model.init_llm=QWEN"], "model.init_vision"),
        (["model.init_vision=SIGLIP"], "model.init_llm"),
        (["model.init_llm=QWEN", "model.init_vision=SIGLIP", "model.init=QWEN"], "model.init"),
        (["model.init_llm=/nowhere", "model.init_vision=SIGLIP"], "model.init_llm"),
        # the checkpoints' kinds, read from config.json before any work
        (["model.init_llm=QWEN", "model.init_vision=QWEN"], "model.init_vision"),
        (["model.init_llm=SIGLIP", "model.init_vision=SIGLIP"], "model.init_llm"),
        (["model.init_llm=QWEN", "model.init_vision=SIGLIP16"], "model.init_vision"),
    ],
)
def test_bad_part_settings_fail_before_any_work(
    tmp_path, parts, train_recipe, train_config_writer, sets, field
):
    config = train_config_writer(tmp_path / "t.yaml", train_recipe, tmp_path / "out")
    sets = [
        s.replace("QWEN", str(parts / "qwen"))
        .replace("SIGLIP16", str(parts / "siglip16"))
        .replace("SIGLIP", str(parts / "siglip"))
        for s in sets
    ]
    cfg = load_config(TrainConfig, config, sets)
    with pytest.raises(ConfigError) as e:
        cfg.check_runnable([1])
    assert e.value.field == field
    assert not (tmp_path / "out").exists()
