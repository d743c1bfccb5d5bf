"""Instruction rotation: deterministic per key and seed, spread over the whole set."""

from __future__ import annotations

from collections import Counter

import pytest

from manifests.configs import ConfigError
from recaption.prompts import (
    DETAILED_INSTRUCTIONS,
    SHORT_INSTRUCTIONS,
    PromptConfig,
    pick_instruction,
)

KEYS = [f"sample-{i:06d}" for i in range(400)]


def test_same_key_and_seed_same_instruction():
    picks = [pick_instruction(SHORT_INSTRUCTIONS, k, 0) for k in KEYS]
    assert picks == [pick_instruction(list(SHORT_INSTRUCTIONS), k, 0) for k in KEYS]
    assert pick_instruction(SHORT_INSTRUCTIONS, "sample-000001", 0) == picks[1]


def test_choices_are_varied_and_roughly_even():
    counts = Counter(pick_instruction(DETAILED_INSTRUCTIONS, k, 0) for k in KEYS)
    assert set(counts) == set(DETAILED_INSTRUCTIONS)
    expected = len(KEYS) / len(DETAILED_INSTRUCTIONS)
    assert all(expected / 2 < n < expected * 2 for n in counts.values())


def test_seed_changes_the_draw():
    a = [pick_instruction(SHORT_INSTRUCTIONS, k, 0) for k in KEYS]
    b = [pick_instruction(SHORT_INSTRUCTIONS, k, 1) for k in KEYS]
    assert sum(x != y for x, y in zip(a, b, strict=True)) > len(KEYS) // 2


def test_prompt_config():
    cfg = PromptConfig(seed=3)
    assert cfg.instruction("short", "k1") == pick_instruction(SHORT_INSTRUCTIONS, "k1", 3)
    assert cfg.instruction("detailed", "k1") in DETAILED_INSTRUCTIONS
    assert cfg.model_prompt("short") == "Describe this image in one sentence."
    assert "in detail" in cfg.model_prompt("detailed")
    with pytest.raises(ValueError, match="caption kind"):
        cfg.instruction("medium", "k1")


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({"short": []}, "prompts.short"),
        ({"detailed": ["Describe it.", "  "]}, r"prompts.detailed\[1\]"),
        ({"short": ["<image>\nDescribe it."]}, r"prompts.short\[0\]"),
        ({"detailed_model_prompt": ""}, "prompts.detailed_model_prompt"),
    ],
)
def test_bad_config_names_the_field(fields, name):
    with pytest.raises(ConfigError, match=name):
        PromptConfig(**fields)
