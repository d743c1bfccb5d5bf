"""A compact VideoLLaMA3 and its processor, offline: from a preset, or from a local checkpoint.

The model is transformers' ``VideoLlama3ForConditionalGeneration``, the processor its
``VideoLlama3Processor`` (image and video processors with the preset's pixel budgets, our
tokenizer and chat template). Nothing here reaches a hub: ``init`` and ``tokenizer`` are local
directories.

    model, processor = build_from_preset("small", tokenizer)
    model, processor = load_checkpoint("out/train_compact/stage1/final")
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path

from model.chat import TRAIN_CHAT_TEMPLATE
from model.collate import MAX_FRAMES
from model.presets import Preset, get_preset, model_config
from model.tokenizer import add_special_tokens, load_tokenizer, train_tokenizer

log = logging.getLogger(__name__)
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")


def build_processor(preset: Preset | str, tokenizer, image_merge_size: int = 1):
    """``VideoLlama3Processor`` with the preset's image and frame pixel budgets (images merged
    ``image_merge_size`` x ``image_merge_size``, 1 but in stage 4, which sets it to 2 through
    :func:`model.stream.stage_collator`; video 2x2 as in the paper) around ``tokenizer``, with
    our chat template."""
    from transformers import (
        VideoLlama3ImageProcessor,
        VideoLlama3Processor,
        VideoLlama3VideoProcessor,
    )

    p = get_preset(preset) if isinstance(preset, str) else preset
    image = {"shortest_edge": p.image_pixels[0], "longest_edge": p.image_pixels[1]}
    # transformers' video processor reads longest_edge as the pixels of the WHOLE video (it
    # divides by the frame count) and shortest_edge as one frame's: a frame gets up to the
    # preset's per-frame maximum for videos of up to MAX_FRAMES frames; the collator's visual
    # token budget caps the total
    frame = {"shortest_edge": p.frame_pixels[0], "longest_edge": p.frame_pixels[1] * MAX_FRAMES}
    return VideoLlama3Processor(
        image_processor=VideoLlama3ImageProcessor(size=image, merge_size=image_merge_size),
        video_processor=VideoLlama3VideoProcessor(size=frame, merge_size=2),
        tokenizer=tokenizer,
        chat_template=TRAIN_CHAT_TEMPLATE,
    )


def build_model(preset: Preset | str, processor, seed: int = 0, attn_implementation="sdpa"):
    """A randomly initialised ``VideoLlama3ForConditionalGeneration`` of ``preset``'s shape,
    sized to the processor's tokenizer (fp32 weights; training autocasts)."""
    import torch
    from transformers import VideoLlama3ForConditionalGeneration

    p = get_preset(preset) if isinstance(preset, str) else preset
    tok = processor.tokenizer
    cfg = model_config(
        p,
        vocab_size=len(tok),
        image_token_id=processor.image_token_id,
        video_token_id=processor.video_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        bos_token_id=None,
    )
    cfg._attn_implementation = attn_implementation
    torch.manual_seed(seed)
    model = VideoLlama3ForConditionalGeneration(cfg)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    return model


def build_from_preset(
    preset: Preset | str,
    tokenizer=None,
    corpus: Callable[[], Iterable[str]] | None = None,
    vocab_size: int | None = None,
    seed: int = 0,
    attn_implementation: str = "sdpa",
):
    """``(model, processor)`` of ``preset``: around ``tokenizer`` when given, else around a BPE
    trained on ``corpus()`` with ``vocab_size`` (default: the preset's) entries."""
    p = get_preset(preset) if isinstance(preset, str) else preset
    if tokenizer is None:
        if corpus is None:
            raise ValueError("give a tokenizer or a corpus to train one on")
        tokenizer = train_tokenizer(corpus(), vocab_size or p.vocab_size)
    processor = build_processor(p, tokenizer)
    return build_model(p, processor, seed, attn_implementation), processor


def has_processor(path: str | Path) -> bool:
    return any((Path(path) / f).is_file() for f in PROCESSOR_FILES)


def load_checkpoint(
    path: str | Path,
    preset: Preset | str | None = None,
    tokenizer=None,
    attn_implementation: str = "sdpa",
):
    """``(model, processor)`` from a local checkpoint directory (``from_pretrained``, fp32).

    The processor is the directory's own when it has one and no ``tokenizer`` is given;
    otherwise it is built from ``preset`` around ``tokenizer`` (or the directory's tokenizer).
    Special tokens the tokenizer lacks are added, the embeddings grown to match, and the chat
    template set to ours (:mod:`model.chat`)."""
    from transformers import VideoLlama3ForConditionalGeneration, VideoLlama3Processor

    p = Path(path)
    if not (p / "config.json").is_file():
        raise FileNotFoundError(f"no model checkpoint (config.json) in {p}")
    if tokenizer is None and has_processor(p):
        processor = VideoLlama3Processor.from_pretrained(p, local_files_only=True)
        add_special_tokens(processor.tokenizer)
        processor.chat_template = TRAIN_CHAT_TEMPLATE  # what the trainer renders with
    else:
        if preset is None:
            raise ValueError(f"{p} has no processor: name a preset to build one")
        processor = build_processor(preset, add_special_tokens(tokenizer or load_tokenizer(p)))
    import torch

    model = VideoLlama3ForConditionalGeneration.from_pretrained(
        p, dtype=torch.float32, local_files_only=True, attn_implementation=attn_implementation
    )
    n = len(processor.tokenizer)
    if model.get_input_embeddings().num_embeddings < n:
        log.info("growing the embeddings of %s to the tokenizer's %d tokens", p, n)
        model.resize_token_embeddings(n, pad_to_multiple_of=64)
    if (model.config.image_token_id, model.config.video_token_id) != (
        processor.image_token_id,
        processor.video_token_id,
    ):
        model.config.image_token_id = processor.image_token_id
        model.config.video_token_id = processor.video_token_id
    return model, processor


def save_checkpoint(model, processor, path: str | Path) -> Path:
    """``save_pretrained`` of the model (safetensors) and the processor into ``path``."""
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(p)
    processor.save_pretrained(p)
    return p


__all__ = [
    "build_from_preset",
    "build_model",
    "build_processor",
    "has_processor",
    "load_checkpoint",
    "save_checkpoint",
]
