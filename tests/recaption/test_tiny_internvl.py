"""The tiny InternVL is an ordinary HF-native checkpoint: Auto classes load it offline."""

from __future__ import annotations

import json

from PIL import Image

from vl3data.tiny_models import INTERNVL_TOKENS_PER_TILE


def test_directory_is_hf_native_and_small(tiny_internvl):
    files = {p.name: p.stat().st_size for p in tiny_internvl.iterdir()}
    assert {
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "processor_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
    } <= set(files)
    assert sum(files.values()) < 5 * 2**20
    config = json.loads((tiny_internvl / "config.json").read_text())
    assert config["architectures"] == ["InternVLForConditionalGeneration"]
    assert config["text_config"]["model_type"] == "qwen2"
    tok_config = json.loads((tiny_internvl / "tokenizer_config.json").read_text())
    assert tok_config["tokenizer_class"] == "Qwen2Tokenizer"
    assert tok_config["extra_special_tokens"]["context_image_token"] == "<IMG_CONTEXT>"


def test_auto_classes_load_it_and_expand_image_tokens(tiny_internvl):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    proc = AutoProcessor.from_pretrained(tiny_internvl)
    model = AutoModelForImageTextToText.from_pretrained(tiny_internvl)
    tok = proc.tokenizer
    assert model.config.image_token_id == tok.convert_tokens_to_ids("<IMG_CONTEXT>")
    assert model.generation_config.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")
    for special in ("<img>", "</img>", "<IMG_CONTEXT>", "<|im_start|>", "<|im_end|>"):
        assert tok.tokenize(special) == [special]
    text = proc.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi."}]}],
        add_generation_prompt=True,
        tokenize=False,
    )
    assert text == "<|im_start|>user\n<IMG_CONTEXT>\nHi.<|im_end|>\n<|im_start|>assistant\n"
    inputs = proc(images=[Image.new("RGB", (112, 56))], text=[text], return_tensors="pt")
    tiles = inputs["pixel_values"].shape[0]
    assert tiles == 3  # 2x1 tiles and the thumbnail
    ids = inputs["input_ids"][0].tolist()
    assert ids.count(model.config.image_token_id) == tiles * INTERNVL_TOKENS_PER_TILE
    out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert len(ids) < out.shape[1] <= len(ids) + 3  # it may emit EOS early
