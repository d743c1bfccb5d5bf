"""TransformersEngine on real photos with the tiny random InternVL."""

from __future__ import annotations

import io
import sys

import pytest
from PIL import Image

from recaption.engines.base import EngineConfig, Request, SamplingConfig
from recaption.engines.hf import TransformersEngine, decode_image, trim_generated
from vl3data.sample_media import jpeg_bytes, png_bytes
from vl3data.tiny_models import INTERNVL_TOKENS_PER_TILE

PROMPT = "Describe this image in one sentence."


@pytest.fixture(scope="module")
def requests_(photos) -> list[Request]:
    return [Request(name, jpeg_bytes(img), PROMPT) for name, img in photos.items()]


def test_one_result_per_request_in_order(hf_engine, requests_):
    results = hf_engine.generate(requests_, SamplingConfig(max_new_tokens=6))
    assert [r.key for r in results] == [r.key for r in requests_]
    assert all(r.error is None for r in results)
    assert all(r.finish_reason in ("stop", "length") for r in results)
    # the random model's text depends on the image
    assert len({r.text for r in results}) > 1


def test_token_counts_match_the_tokenizer(hf_engine, requests_):
    proc = hf_engine._processor
    tok = proc.tokenizer
    results = hf_engine.generate(requests_, SamplingConfig(max_new_tokens=6))
    for req, res in zip(requests_, results, strict=True):
        im = decode_image(req.image, 112)
        tiles = proc.image_processor.get_number_of_image_patches(im.height, im.width, {})
        image = "<img>" + "<IMG_CONTEXT>" * (tiles * INTERNVL_TOKENS_PER_TILE) + "</img>"
        text = f"<|im_start|>user\n{image}\n{PROMPT}<|im_end|>\n<|im_start|>assistant\n"
        assert res.prompt_tokens == len(tok(text)["input_ids"])
        if res.finish_reason == "length":
            assert res.output_tokens == 6
        else:  # the EOS is counted, and it is the last token
            assert 1 <= res.output_tokens <= 6
        assert res.text == res.text.replace("<|im_end|>", "")


def test_small_max_new_tokens_truncates(hf_engine, requests_):
    results = hf_engine.generate(requests_, SamplingConfig(max_new_tokens=2))
    lengths = [r for r in results if r.finish_reason == "length"]
    assert lengths, "a random model rarely ends a caption within 2 tokens"
    assert all(r.output_tokens == 2 for r in lengths)


def test_greedy_batch_equals_one_by_one(hf_engine, requests_):
    sampling = SamplingConfig(max_new_tokens=5)
    batched = hf_engine.generate(requests_, sampling)
    single = [hf_engine.generate([r], sampling)[0] for r in requests_]
    assert batched == single


def test_sampling_is_seeded_per_request(hf_engine, requests_):
    """Same seed, same texts, whatever the batch; another seed, other texts."""
    sampling = SamplingConfig(max_new_tokens=5, temperature=1.0, top_p=0.9, seed=7)
    first = hf_engine.generate(requests_, sampling)
    assert hf_engine.generate(requests_, sampling) == first
    assert hf_engine.generate(requests_[::-1], sampling)[::-1] == first
    assert hf_engine.generate(requests_[2:3], sampling)[0] == first[2]
    other = hf_engine.generate(requests_, SamplingConfig(max_new_tokens=5, temperature=1.0, seed=8))
    assert [r.text for r in other] != [r.text for r in first]


def test_bad_images_get_an_error_and_the_rest_go_on(hf_engine, requests_):
    good = requests_[:2]
    broken = [
        Request("text", b"this is not an image", PROMPT),
        Request("truncated", good[0].image[: len(good[0].image) // 3], PROMPT),
    ]
    mixed = [good[0], broken[0], good[1], broken[1]]
    sampling = SamplingConfig(max_new_tokens=4)
    results = hf_engine.generate(mixed, sampling)
    assert [r.key for r in results] == ["astronaut", "text", "chelsea", "truncated"]
    for res in (results[1], results[3]):
        assert res.error.startswith("decode_error: ")
        assert res.text == "" and res.output_tokens == 0
        assert " at 0x" not in res.error  # stable across runs
    assert results[0::2] == hf_engine.generate(good, sampling)
    assert hf_engine.generate([broken[0]], sampling)[0].error == results[1].error


def test_decode_image_shrinks_flattens_and_rotates():
    rgba = Image.new("RGBA", (400, 100), (0, 0, 0, 0))
    im = decode_image(png_bytes(rgba), 112)
    assert im.mode == "RGB" and im.size == (112, 28)
    assert im.getpixel((0, 0)) == (255, 255, 255)  # transparent is white, not black
    small = Image.new("RGB", (50, 30), (10, 20, 30))
    assert decode_image(png_bytes(small), 112).size == (50, 30)  # never upscaled
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees
    buf = io.BytesIO()
    Image.new("RGB", (300, 150)).save(buf, "JPEG", exif=exif)
    assert decode_image(buf.getvalue(), 112).size == (56, 112)


def test_trim_generated():
    eos = {9}
    assert trim_generated([1, 2, 9, 0, 0], eos) == ([1, 2, 9], "stop")
    assert trim_generated([9, 0], eos) == ([9], "stop")
    assert trim_generated([1, 2, 3], eos) == ([1, 2, 3], "length")


def test_nothing_loads_before_setup(tmp_path):
    engine = TransformersEngine(EngineConfig(model=str(tmp_path / "missing")))
    assert engine._model is None
    with pytest.raises(OSError):
        engine.setup()


def test_missing_transformers_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ImportError, match=r"pip install 'vl3data\[models\]'"):
        TransformersEngine(EngineConfig()).setup()


def test_bad_precision_fails_naming_the_field():
    from manifests.configs import ConfigError

    with pytest.raises(ConfigError, match=r"engine\.precision"):
        TransformersEngine(EngineConfig(precision="int3"))
