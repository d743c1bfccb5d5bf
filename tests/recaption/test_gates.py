"""Caption gates: every failure kind on crafted results, and real captions pass."""

from __future__ import annotations

import pytest

from manifests.configs import ConfigError
from recaption.engines.base import Result
from recaption.gates import REASONS, GateConfig, check_caption, clean_caption, latin_share

GOOD_SHORT = [
    "An astronaut in a white spacesuit poses in front of an American flag.",
    "A ginger tabby cat with green eyes lying on a rug.",
    "A man with a hat, a man with a dog and a man with a bike on a street.",
    "Crêpes and café au lait on a table at a Parisian bistro.",
    "A storefront with a red sign that reads 北京烤鸭 in large gold letters.",
    '"Stop" sign on a "quiet" road.',
]
GOOD_DETAILED = (
    "The image shows a busy street market at dusk. In the foreground, there is a wooden stall "
    "covered with baskets of red apples, yellow bananas and green pears, and a hand-written "
    "sign that reads FRESH FRUIT. To the left of the stall, a woman in a blue coat is holding "
    "a paper bag and talking to the vendor, an older man wearing a flat cap. In the background "
    "there are more stalls with striped awnings, strings of warm lights and a few people "
    "walking past. On the right side of the image, a bicycle leans against a lamp post. The "
    "photograph has a shallow depth of field, soft warm light and a slightly grainy, "
    "documentary style."
)


def result(text: str, finish: str = "stop", error: str | None = None) -> Result:
    return Result("k", text, 10, 20, finish, error)


@pytest.mark.parametrize("text", GOOD_SHORT)
def test_good_short_captions_pass(text):
    assert check_caption(result(text)) is None


def test_newlines_and_tabs_are_not_garbled():
    text = "A red car parked by a cafe.\nA man walks past\twith a dog on a lead."
    assert check_caption(result(text)) is None


def test_good_detailed_caption_passes():
    assert check_caption(result(GOOD_DETAILED), min_chars=100) is None


LOOPS = [
    "A cat sitting on a mat. " * 3,
    "A cat " + "very " * 4 + "fluffy.",
    "A red car, a blue car, " * 3 + "and a tree.",
    "A sunset!!!!!!!!!!!!!!!",
    "夕阳" * 10,
    "The man wears a hat. The man wears a shirt. The man wears shoes. "
    "The man wears a watch. The man wears a belt. The man wears gloves.",
    GOOD_DETAILED + " The photograph has soft warm light." * 3,
]


@pytest.mark.parametrize("text", LOOPS)
def test_repetition(text):
    assert check_caption(result(text)) == "repetition"


@pytest.mark.parametrize(
    ("res", "reason"),
    [
        (result("", error="decode_error: UnidentifiedImageError"), "engine_error"),
        (result("   "), "empty"),
        (result('"..."'), "empty"),
        (result("A red car parked by a caf\ufffd on a street."), "garbled"),
        (result("A red car parked\x07 by a cafe on a street."), "garbled"),
        (result("I'm sorry, but I can't describe this image."), "refusal"),
        (result("I’m sorry, I cannot help with that."), "refusal"),  # typographic apostrophe
        (result("As an AI language model, I do not see images."), "refusal"),
        (result("Unfortunately, I am unable to see the picture."), "refusal"),
        (result("A dog runs along the beach while the waves", "length"), "truncated"),
        (result("一只猫坐在木桌上，旁边有一杯咖啡。"), "wrong_language"),
        (result("Кошка сидит на деревянном столе."), "wrong_language"),
        (result("A cat. 一只猫坐在木桌上，旁边有一杯咖啡和一本书。"), "wrong_language"),
        (result("12345 678 90"), "wrong_language"),
        (result("A cat."), "too_short"),
    ],
)
def test_each_failure_kind(res, reason):
    assert check_caption(res) == reason


def test_every_reason_is_exercised():
    """The list above covers REASONS (kept in sync with the module)."""
    assert set(REASONS) == {
        "engine_error",
        "empty",
        "garbled",
        "refusal",
        "repetition",
        "truncated",
        "wrong_language",
        "too_short",
    }


def test_order_loop_beats_truncation_and_refusal_is_only_at_the_start():
    assert check_caption(result("a tree, " * 20, "length")) == "repetition"
    later = "A sign in the window says I'm sorry, we are closed."
    assert check_caption(result(later)) is None


def test_config_overrides_and_switches():
    assert check_caption(result("A cat on a mat."), min_chars=20) == "too_short"
    chinese = result("一只猫坐在木桌上，旁边有一杯咖啡。")
    assert check_caption(chinese, language=None) is None
    cfg = GateConfig(refusal_prefixes=["no comment"])
    assert check_caption(result("No comment on this picture."), cfg) == "refusal"
    assert check_caption(result("I'm sorry to see a broken vase on the floor."), cfg) is None


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({"min_chars": -1}, "gates.min_chars"),
        ({"language": "fr"}, "gates.language"),
        ({"min_latin_share": 1.5}, "gates.min_latin_share"),
        ({"max_repeated_share": 0}, "gates.max_repeated_share"),
        ({"ngram_min_count": 1}, "gates.ngram_min_count"),
        ({"refusal_prefixes": ["ok", " "]}, "gates.refusal_prefixes"),
    ],
)
def test_bad_config_names_the_field(fields, name):
    with pytest.raises(ConfigError, match=name):
        GateConfig(**fields)
    with pytest.raises(ConfigError, match=name):
        check_caption(result("A cat sitting on a mat."), **fields)


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("  A cat on a mat.\n", "A cat on a mat."),
        ('"A cat on a mat."', "A cat on a mat."),
        ("“A cat on a mat.”", "A cat on a mat."),
        ("' A cat. '", "A cat."),
        ('"Stop" sign on a "quiet" road.', '"Stop" sign on a "quiet" road.'),
        ("The image shows a cat.", "The image shows a cat."),
        ('"', '"'),
    ],
)
def test_clean_caption_is_conservative(raw, clean):
    assert clean_caption(raw) == clean


def test_latin_share():
    assert latin_share("café") == 1.0
    assert latin_share("猫 cat") == pytest.approx(0.75)
    assert latin_share("123") == 0.0
