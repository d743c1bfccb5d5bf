"""Tiny, randomly initialised models of the real classes, built offline.

No machine here reaches a model hub, so the tests and the demo run the real code paths
(open_clip's ``CLIP``, transformers' ``CLIPModel`` and ``Blip2ForConditionalGeneration``) on
models small enough to run on a CPU in milliseconds. Their outputs are meaningless; their
shapes, dtypes, file formats and loading paths are the real ones. The CLIP models project to
768 dimensions, like ViT-L/14, so the real LAION aesthetic heads apply to their embeddings.

    python -m vl3data.tiny_models data/models    # writes open_clip/, hf_clip/, blip2/
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


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m vl3data.tiny_models OUT_DIR", file=sys.stderr)
        return 2
    root = Path(args[0])
    write_tiny_open_clip(root / "open_clip")
    write_tiny_hf_clip(root / "hf_clip")
    write_tiny_blip2(root / "blip2")
    print(f"wrote tiny models to {root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
