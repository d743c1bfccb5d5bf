"""Compact VideoLLaMA3 sizes: one knob (``model.preset``), three settings.

* ``tiny``: for the tests; a few ten thousand parameters, seconds on a CPU.
* ``small``: the CPU demo; a few million parameters that learn the demo's captions in minutes.
* ``2b``: the paper's VideoLLaMA3-2B layout for reference: a SigLIP-so400m-like vision encoder
  (27 layers, width 1152, patch 14) and a Qwen2.5-1.5B-like LLM (28 layers, width 1536, GQA
  12/2 heads, tied embeddings, vocabulary 151,936), with the paper's 16,384-token sequences and
  10,240 vision tokens. It needs Qwen2.5's tokenizer (``model.tokenizer`` or ``model.init``).

Each preset fixes the model's shape and the data budget scaled to it: pixels per image and per
video frame (the processor resizes inside these), and the collator's sequence and vision-token
caps. Everything else about a model comes from transformers' ``VideoLlama3Config``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PATCH = 14  # VideoLLaMA3's patch size: an image of H x W pixels is (H/14) x (W/14) patches


@dataclass(frozen=True)
class Preset:
    """One size of the model and its data budget."""

    name: str
    vision: dict[str, Any]  # VideoLlama3VisionConfig fields
    text: dict[str, Any]  # Qwen2Config fields, less the vocabulary size (the tokenizer's)
    vocab_size: int  # BPE target when the tokenizer is trained here
    image_pixels: tuple[int, int]  # (min, max) pixels of an image after resizing
    frame_pixels: tuple[int, int]  # (min, max) pixels of a video frame after resizing
    max_length: int  # tokens per sample (the paper: 16384)
    max_vision_tokens: int  # vision tokens per sample (the paper: 10240)
    tokens_per_batch: int  # tokens per micro-batch the collator packs
    notes: str = ""


def _qwen2(hidden: int, inter: int, layers: int, heads: int, kv: int, **kw) -> dict[str, Any]:
    return {
        "model_type": "qwen2",
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "tie_word_embeddings": True,
        "rms_norm_eps": 1e-6,
        **kw,
    }


def _siglip(hidden: int, inter: int, layers: int, heads: int) -> dict[str, Any]:
    return {
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "patch_size": PATCH,
    }


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        name="tiny",
        vision=_siglip(32, 64, 1, 2),
        # 10x the usual init: at 0.02 a random LLM's output hardly depends on its input, so
        # stage 1 (LLM frozen) could not move the loss; at 0.2 it can
        text=_qwen2(32, 64, 2, 2, 1, max_position_embeddings=2048, initializer_range=0.2),
        vocab_size=1024,
        image_pixels=(28 * 28, 28 * 28 * 4),  # 4 to 16 patches
        frame_pixels=(28 * 28, 28 * 28 * 4),  # 1 to 4 tokens per frame after 2x2 merging
        max_length=512,
        max_vision_tokens=256,
        tokens_per_batch=1024,
        notes="tests: seconds on a CPU",
    ),
    "small": Preset(
        name="small",
        vision=_siglip(128, 512, 4, 4),
        text=_qwen2(256, 768, 4, 4, 2, max_position_embeddings=4096),
        vocab_size=4096,
        image_pixels=(56 * 56, 28 * 28 * 16),  # up to 112 x 112: 64 image tokens
        frame_pixels=(28 * 28, 28 * 28 * 16),  # up to 16 tokens per frame after 2x2 merging
        max_length=4096,  # long enough for the demo's streaming samples (a label per frame)
        max_vision_tokens=1024,
        tokens_per_batch=4096,
        notes="the CPU demo: learns the demo captions in minutes",
    ),
    "2b": Preset(
        name="2b",
        vision=_siglip(1152, 4304, 27, 16),
        text=_qwen2(
            1536,
            8960,
            28,
            12,
            2,
            max_position_embeddings=32768,
            rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
        ),
        vocab_size=151_936,
        image_pixels=(56 * 56, 28 * 28 * 1280),  # VideoLlama3ImageProcessor's defaults
        frame_pixels=(128 * 28 * 28, 28 * 28 * 768),  # per frame; the 10240-token budget binds
        max_length=16384,
        max_vision_tokens=10240,
        tokens_per_batch=16384,
        notes="the paper's 2B layout (SigLIP-so400m + Qwen2.5-1.5B); needs Qwen2.5's tokenizer",
    ),
}


def get_preset(name: str) -> Preset:
    """The preset called ``name``; ``KeyError`` names the valid ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"no preset {name!r}; presets: {', '.join(PRESETS)}") from None


def model_config(preset: Preset, vocab_size: int, image_token_id: int, video_token_id: int, **ids):
    """transformers' ``VideoLlama3Config`` for ``preset`` and a tokenizer: ``vocab_size`` rows
    (rounded up to a multiple of 64) and its placeholder/eos/pad ids (``ids`` go to the text
    config: ``eos_token_id``, ``pad_token_id``, ``bos_token_id``)."""
    from transformers import VideoLlama3Config

    text = {**preset.text, "vocab_size": -(-vocab_size // 64) * 64, **ids}
    return VideoLlama3Config(
        vision_config=dict(preset.vision),
        text_config=text,
        image_token_id=image_token_id,
        video_token_id=video_token_id,
        tie_word_embeddings=bool(text.get("tie_word_embeddings", False)),
    )


def parameter_count(preset: Preset, vocab_size: int | None = None) -> dict[str, int]:
    """Parameters per group (vision, projector, llm) and in total, counted on the meta device
    (nothing is allocated, so the 2B layout is counted in a second)."""
    import torch
    from transformers import VideoLlama3ForConditionalGeneration

    from model.stages import split_parameters

    cfg = model_config(preset, vocab_size or preset.vocab_size, 1, 2)
    with torch.device("meta"):
        model = VideoLlama3ForConditionalGeneration(cfg)
    out = {g: sum(p.numel() for _, p in ps) for g, ps in split_parameters(model).items()}
    out["total"] = sum(out.values())
    return out


__all__ = ["PATCH", "PRESETS", "Preset", "get_preset", "model_config", "parameter_count"]
