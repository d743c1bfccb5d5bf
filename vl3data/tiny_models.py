"""Tiny, randomly initialised models of the real classes, built offline.

No machine here reaches a model hub, so the tests and the demo run the real code paths
(open_clip's ``CLIP``, transformers' ``CLIPModel``, ``Blip2ForConditionalGeneration`` and
``InternVLForConditionalGeneration``) on models small enough to run on a CPU in milliseconds.
Their outputs are meaningless; their shapes, dtypes, file formats and loading paths are the real
ones. The CLIP models project to 768 dimensions, like ViT-L/14, so the real LAION aesthetic heads
apply to their embeddings.

    python -m vl3data.tiny_models data/models    # open_clip/ hf_clip/ blip2/ internvl/
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

EMBED_DIM = 768  # ViT-L/14's: the LAION aesthetic heads expect it
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def tiny_open_clip_cfg() -> dict:
    return {
        "embed_dim": EMBED_DIM,
        "vision_cfg": {
            "image_size": 64,
            "layers": 2,
            "width": 64,
            "patch_size": 16,
            "head_width": 32,
        },
        "text_cfg": {
            "context_length": 77,
            "vocab_size": 49408,
            "width": 64,
            "heads": 2,
            "layers": 2,
        },
    }


def write_tiny_open_clip(out: Path, seed: int = 0) -> Path:
    """An open_clip ``local-dir:`` model: ``open_clip_config.json`` + safetensors weights."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    out.mkdir(parents=True, exist_ok=True)
    cfg = tiny_open_clip_cfg()
    model = open_clip.CLIP(**cfg)
    preprocess = {
        "size": cfg["vision_cfg"]["image_size"],
        "mean": list(OPENAI_MEAN),
        "std": list(OPENAI_STD),
        "interpolation": "bicubic",
        "resize_mode": "shortest",
    }
    (out / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": cfg, "preprocess_cfg": preprocess}, indent=2)
    )
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / "open_clip_model.safetensors"))
    return out


def write_tiny_hf_clip(out: Path, seed: int = 0) -> Path:
    """A transformers ``CLIPModel`` directory (config, safetensors, image processor, tokenizer)."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(seed)
    cfg = CLIPConfig(
        projection_dim=EMBED_DIM,
        vision_config={
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 64,
            "patch_size": 16,
        },
        text_config={
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "vocab_size": 1000,
            "max_position_embeddings": 77,
            "eos_token_id": 0,
            "bos_token_id": 1,
            "pad_token_id": 2,
        },
    )
    model = CLIPModel(cfg)
    model.save_pretrained(out)
    CLIPImageProcessor(
        size={"shortest_edge": 64},
        crop_size={"height": 64, "width": 64},
        image_mean=list(OPENAI_MEAN),
        image_std=list(OPENAI_STD),
    ).save_pretrained(out)
    _tiny_tokenizer(vocab_size=1000).save_pretrained(out)
    return out


def write_tiny_blip2(out: Path, seed: int = 0) -> Path:
    """A transformers ``Blip2ForConditionalGeneration`` directory with its processor."""
    import torch
    from transformers import (
        Blip2Config,
        Blip2ForConditionalGeneration,
        Blip2Processor,
        BlipImageProcessor,
    )

    torch.manual_seed(seed)
    processor = Blip2Processor(
        image_processor=BlipImageProcessor(
            size={"height": 64, "width": 64},
            image_mean=list(OPENAI_MEAN),
            image_std=list(OPENAI_STD),
        ),
        tokenizer=_tiny_tokenizer(vocab_size=1000),
        num_query_tokens=4,
    )
    tok = processor.tokenizer
    cfg = Blip2Config(
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 64,
            "patch_size": 16,
        },
        qformer_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "encoder_hidden_size": 32,
            "vocab_size": 1000,
        },
        text_config={
            "model_type": "opt",
            "hidden_size": 32,
            "ffn_dim": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "vocab_size": len(tok),
            "max_position_embeddings": 128,
            "word_embed_proj_dim": 32,
            "bos_token_id": tok.bos_token_id,
            "eos_token_id": tok.eos_token_id,
            "pad_token_id": tok.pad_token_id,
        },
        num_query_tokens=4,
        image_token_index=tok.convert_tokens_to_ids("<image>"),
    )
    Blip2ForConditionalGeneration(cfg).save_pretrained(out)
    processor.save_pretrained(out)
    return out


def _tiny_tokenizer(vocab_size: int):
    """A byte-level BPE trained offline on a few sentences, wrapped for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [
        "a photo of a cat sitting on a table",
        "an astronaut in a white suit",
        "a cup of coffee on a saucer",
        "a rocket on the launch pad at night",
        "a red motorcycle parked in a garage",
        "a pink flower in a garden",
        "a temple in china with trees",
        "a portrait of a woman in uniform",
    ] * 20
    specials = ["<|endoftext|>", "<|startoftext|>", "<pad>"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<pad>",
        unk_token="<|endoftext|>",
        model_max_length=77,
    )


# InternVL: the HF-native layout (``OpenGVLab/InternVL3-1B-hf`` style), which transformers,
# vLLM and ``transformers serve`` all load. A 56-pixel tile is 4x4 patches of 14, which the
# 0.5 pixel shuffle turns into 4 image tokens per tile; at most 4 tiles plus a thumbnail.
INTERNVL_TILE = 56
INTERNVL_TOKENS_PER_TILE = 4
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Qwen2's pre-tokenizer split, so the tokenizer is an ordinary ``Qwen2Tokenizer``
QWEN2_SPLIT = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"""
    r""" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
INTERNVL_IMAGE_TOKENS = {
    "start_image_token": "<img>",
    "end_image_token": "</img>",
    "context_image_token": "<IMG_CONTEXT>",
    "video_token": "<video>",
}
# InternVL's chat format (ChatML); an image part renders as the placeholder the processor expands
INTERNVL_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}{{ '<IMG_CONTEXT>\\n' }}"
    "{% elif content['type'] == 'video' %}{{ '<video>\\n' }}"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{{ '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
CAPTION_CORPUS = (
    "The image shows an astronaut in a white suit standing in front of a flag.",
    "A ginger cat with green eyes lies on a wooden floor next to a blanket.",
    "A cup of coffee on a white saucer, with latte art in the shape of a leaf.",
    "A rocket stands on the launch pad at night, lit by bright floodlights.",
    "A red motorcycle is parked in a garage beside a workbench and some tools.",
    "A pink flower with yellow stamens in a green garden on a sunny day.",
    "A temple in China with a curved roof, surrounded by trees and a blue sky.",
    "A portrait of a woman in a navy uniform, smiling at the camera.",
    "Describe this image in detail, covering objects, their attributes, the scene, any text, "
    "and the style.",
    "Describe the image briefly. Write a one-sentence caption for this image.",
    "In the background there are mountains; in the foreground, two people walk a dog.",
    "The text on the sign reads OPEN 24 HOURS in large red letters.",
    "It is a photograph taken outdoors, with soft light and a shallow depth of field.",
    "There are 3 apples, 2 bananas and a bottle of water on the kitchen table.",
)


def _tiny_qwen2_tokenizer(
    named: dict[str, str] | None = None, added: tuple[str, ...] = ("<|im_start|>",)
):
    """A real ``Qwen2Tokenizer`` (byte-level BPE with Qwen2's split, trained offline on a few
    captions) carrying the ChatML tokens and a model's named special tokens (InternVL's image
    tokens by default)."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import AddedToken, Qwen2Tokenizer

    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=1000, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    bpe.train_from_iterator(list(CAPTION_CORPUS) * 10, trainer)
    learned = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in learned["merges"]]
    tok = Qwen2Tokenizer(
        vocab=learned["vocab"],
        merges=merges,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=dict(INTERNVL_IMAGE_TOKENS if named is None else named),
        model_max_length=8192,
    )
    tok.add_tokens([AddedToken(t, special=True) for t in added])
    return tok


#: VideoLLaMA3's placeholders, as transformers' ``VideoLlama3Processor`` reads them
VIDEOLLAMA3_TOKENS = {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"}


def write_tiny_videollama3_processor(out: Path) -> Path:
    """transformers' ``VideoLlama3Processor`` (its image and video processors, a tiny Qwen2
    tokenizer) with our chat template (:mod:`manifests.chat`), small pixel budgets so tests are
    fast. The renderer of every training record is tested through it."""
    from transformers import (
        VideoLlama3ImageProcessor,
        VideoLlama3Processor,
        VideoLlama3VideoProcessor,
    )

    from manifests.chat import CHAT_TEMPLATE, STREAM_END, STREAM_START

    tok = _tiny_qwen2_tokenizer(
        named=dict(VIDEOLLAMA3_TOKENS), added=("<|im_start|>", STREAM_START, STREAM_END)
    )
    budget = {"shortest_edge": 28 * 28, "longest_edge": 28 * 28 * 4}
    processor = VideoLlama3Processor(
        image_processor=VideoLlama3ImageProcessor(size=budget),
        video_processor=VideoLlama3VideoProcessor(size=budget),
        tokenizer=tok,
        chat_template=CHAT_TEMPLATE,
    )
    out.mkdir(parents=True, exist_ok=True)
    processor.save_pretrained(out)
    return out


def write_tiny_internvl(out: Path, seed: int = 0) -> Path:
    """A transformers ``InternVLForConditionalGeneration`` directory (Qwen2 text model) with its
    ``InternVLProcessor``: GOT-OCR2 tiling image processor, tokenizer and chat template."""
    import torch
    from transformers import (
        GenerationConfig,
        GotOcr2ImageProcessor,
        InternVLConfig,
        InternVLForConditionalGeneration,
        InternVLProcessor,
        InternVLVideoProcessor,
    )

    torch.manual_seed(seed)
    tok = _tiny_qwen2_tokenizer()
    tile = {"height": INTERNVL_TILE, "width": INTERNVL_TILE}
    norm = {"image_mean": list(IMAGENET_MEAN), "image_std": list(IMAGENET_STD)}
    processor = InternVLProcessor(
        image_processor=GotOcr2ImageProcessor(
            size=tile, crop_to_patches=True, min_patches=1, max_patches=4, **norm
        ),
        tokenizer=tok,
        video_processor=InternVLVideoProcessor(size=tile, **norm),
        image_seq_length=INTERNVL_TOKENS_PER_TILE,
        chat_template=INTERNVL_CHAT_TEMPLATE,
    )
    cfg = InternVLConfig(
        vision_config={
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": INTERNVL_TILE,
            "patch_size": 14,
            "initializer_range": 0.2,
        },
        text_config={
            "model_type": "qwen2",
            "vocab_size": len(tok),
            "hidden_size": 64,  # head_dim 32: a size vLLM's CPU attention supports
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "max_position_embeddings": 8192,  # EngineConfig.max_model_len's default
            # 10x the usual init: with 0.02 every image gets the same greedy text and no EOS;
            # with 0.2 the text depends on the image and some captions end by themselves
            "initializer_range": 0.2,
            "tie_word_embeddings": True,
            "bos_token_id": None,
            "eos_token_id": tok.eos_token_id,
            "pad_token_id": tok.pad_token_id,
        },
        image_token_id=tok.context_image_token_id,
        image_seq_length=INTERNVL_TOKENS_PER_TILE,
        downsample_ratio=0.5,
        tie_word_embeddings=True,
    )
    model = InternVLForConditionalGeneration(cfg)
    model.generation_config = GenerationConfig(
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id
    )
    model.save_pretrained(out)
    processor.save_pretrained(out)
    _name_image_tokens(out / "tokenizer_config.json")
    return out


def _name_image_tokens(path: Path) -> None:
    """Store the image tokens as a named ``extra_special_tokens`` mapping, as the hub's
    InternVL ``-hf`` checkpoints do: transformers 5 writes them as top-level keys, which
    transformers 4.x (what a vLLM install may bring) does not turn into tokenizer attributes."""
    conf = json.loads(path.read_text())
    for name in INTERNVL_IMAGE_TOKENS:
        conf.pop(name, None)
    conf["extra_special_tokens"] = dict(INTERNVL_IMAGE_TOKENS)
    path.write_text(json.dumps(conf, indent=2, sort_keys=True) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m vl3data.tiny_models OUT_DIR", file=sys.stderr)
        return 2
    root = Path(args[0])
    write_tiny_open_clip(root / "open_clip")
    write_tiny_hf_clip(root / "hf_clip")
    write_tiny_blip2(root / "blip2")
    write_tiny_internvl(root / "internvl")
    print(f"wrote tiny models to {root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
