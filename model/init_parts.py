"""Stage 1's starting point from two separate checkpoints, as the paper starts VideoLLaMA3-2B:
the vision encoder from SigLIP and the LLM from Qwen2.5, the projector new.

transformers' VideoLLaMA3 vision encoder is SigLIP's transformer with 2D-RoPE in place of the
learned absolute position table (so any resolution works), so its weights carry over name for
name: patch embedding, encoder layers, post-layernorm. SigLIP's position table and its
attention-pooling head have no counterpart and are left out. The LLM is transformers' Qwen2
(Qwen2.5 checkpoints use it): ``model.*`` becomes ``model.language_model.*`` and ``lm_head``
stays. Every weight of both towers must be filled: a missing or misshapen one is an error, not
a silently random layer.

    model, processor, info = build_from_parts("Qwen2.5-1.5B/", "siglip-so400m/", "2b")
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from model.build import build_processor
from model.presets import PATCH, Preset, get_preset
from model.tokenizer import add_special_tokens, load_tokenizer

log = logging.getLogger(__name__)

#: VideoLlama3VisionConfig fields taken from the SigLIP vision config
VISION_FIELDS = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_channels",
    "patch_size",
    "hidden_act",
    "layer_norm_eps",
    "attention_dropout",
)
#: SigLIP weights with no place in VideoLLaMA3's encoder (2D-RoPE replaces the position table;
#: the projector replaces the pooling head)
VISION_DROPPED = ("embeddings.position_embedding.", "head.")


class PartsError(ValueError):
    """A checkpoint that cannot be one of the two parts; ``field`` is the config field to fix."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


def _config(path: str | Path, field: str):
    from transformers import AutoConfig

    p = Path(path)
    if not (p / "config.json").is_file():
        raise PartsError(field, f"no checkpoint (config.json) in {p}")
    return AutoConfig.from_pretrained(p, local_files_only=True)


def check_parts(llm: str | Path, vision: str | Path) -> None:
    """The two checkpoints' configs only (no weights): the right kinds, 14-pixel patches. The
    trainer calls this before any work; :func:`build_from_parts` checks the weights."""
    _vision_config(vision)
    _llm_config(llm)


def _vision_config(path: str | Path):
    """``(its config, its model_type, the vision config)``, or :class:`PartsError`."""
    cfg = _config(path, "model.init_vision")
    kind = getattr(cfg, "model_type", "")
    if kind not in ("siglip", "siglip_vision_model"):
        raise PartsError(
            "model.init_vision",
            f"{path} holds a {kind or 'unknown'} model; a SigLIP checkpoint (siglip or "
            "siglip_vision_model) is needed",
        )
    vcfg = cfg.vision_config if kind == "siglip" else cfg
    if vcfg.patch_size != PATCH:
        raise PartsError(
            "model.init_vision",
            f"{path} has {vcfg.patch_size}-pixel patches; VideoLLaMA3 and its processor use "
            f"{PATCH} (e.g. siglip-so400m-patch14-384)",
        )
    return cfg, kind, vcfg


def _llm_config(path: str | Path):
    cfg = _config(path, "model.init_llm")
    if getattr(cfg, "model_type", "") != "qwen2":
        raise PartsError(
            "model.init_llm",
            f"{path} holds a {getattr(cfg, 'model_type', 'unknown')} model; VideoLLaMA3's LLM "
            "is Qwen2 (Qwen2.5 checkpoints are model_type qwen2)",
        )
    return cfg


def load_vision(path: str | Path) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """SigLIP's vision tower: ``(VideoLlama3VisionConfig fields, weights under
    model.vision_model.*, names left out)``. Takes a ``SiglipVisionModel`` or a whole
    ``SiglipModel`` (its text tower is not read into the model)."""
    import torch
    from transformers import SiglipModel, SiglipVisionModel

    _, kind, vcfg = _vision_config(path)
    cls = SiglipModel if kind == "siglip" else SiglipVisionModel
    loaded = cls.from_pretrained(path, dtype=torch.float32, local_files_only=True)
    tower = getattr(loaded, "vision_model", loaded)  # SiglipModel wraps it; the other is it
    fields = {k: getattr(vcfg, k) for k in VISION_FIELDS}
    weights, dropped = {}, []
    for name, t in tower.state_dict().items():
        if name.startswith(VISION_DROPPED):
            dropped.append(name)
        else:
            weights[f"model.vision_model.{name}"] = t
    return fields, weights, dropped


def load_llm(path: str | Path) -> tuple[Any, dict[str, Any]]:
    """Qwen2 / Qwen2.5 causal LM: ``(its Qwen2Config, weights under model.language_model.*
    and lm_head)``."""
    import torch
    from transformers import AutoModelForCausalLM

    cfg = _llm_config(path)
    lm = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, local_files_only=True)
    weights = {}
    for name, t in lm.state_dict().items():
        if name.startswith("model."):
            weights["model.language_model." + name[len("model.") :]] = t
        elif name == "lm_head.weight" and not cfg.tie_word_embeddings:
            weights[name] = t
    return cfg, weights


def build_from_parts(
    llm: str | Path,
    vision: str | Path,
    preset: Preset | str,
    tokenizer=None,
    seed: int = 0,
    attn_implementation: str = "sdpa",
):
    """``(model, processor, info)``: a ``VideoLlama3ForConditionalGeneration`` whose vision
    encoder is ``vision``'s SigLIP and whose LLM is ``llm``'s Qwen2, with a new projector
    (seeded ``seed``); the processor takes ``preset``'s pixel budgets and ``tokenizer`` (default:
    the LLM's own), with our special tokens. ``info`` says what came from where."""
    import torch
    from transformers import VideoLlama3Config, VideoLlama3ForConditionalGeneration

    p = get_preset(preset) if isinstance(preset, str) else preset
    vision_fields, vision_weights, dropped = load_vision(vision)
    text_cfg, llm_weights = load_llm(llm)
    try:
        tok = add_special_tokens(tokenizer or load_tokenizer(llm))
    except (OSError, ValueError) as exc:
        raise PartsError(
            "model.tokenizer", f"{llm} has no tokenizer ({exc}); name one with model.tokenizer"
        ) from None
    processor = build_processor(p, tok)
    text = text_cfg.to_dict()
    text.update(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    cfg = VideoLlama3Config(
        vision_config=vision_fields,
        text_config=text,
        image_token_id=processor.image_token_id,
        video_token_id=processor.video_token_id,
        tie_word_embeddings=bool(text_cfg.tie_word_embeddings),
    )
    cfg._attn_implementation = attn_implementation
    torch.manual_seed(seed)
    model = VideoLlama3ForConditionalGeneration(cfg)
    own = model.state_dict()
    loaded = {**vision_weights, **llm_weights}
    wrong = [
        f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}"
        for k, v in loaded.items()
        if k in own and own[k].shape != v.shape
    ]
    unknown = [k for k in loaded if k not in own]
    if wrong or unknown:
        raise PartsError(
            "model.init_llm"
            if any("language_model" in k for k in wrong + unknown)
            else "model.init_vision",
            f"weights that do not fit VideoLLaMA3: {(wrong + unknown)[:5]}",
        )
    missing = [
        k
        for k in own
        if k not in loaded
        and ".projector." not in k
        and not (k == "lm_head.weight" and cfg.tie_word_embeddings)
    ]
    if missing:
        raise PartsError(
            "model.init_vision" if "vision_model" in missing[0] else "model.init_llm",
            f"the checkpoint leaves {len(missing)} weights unset, e.g. {missing[:3]}",
        )
    model.load_state_dict(loaded, strict=False)
    if cfg.tie_word_embeddings:
        model.tie_weights()
    n = len(tok)
    if model.get_input_embeddings().num_embeddings < n:
        model.resize_token_embeddings(n, pad_to_multiple_of=64)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    heads = {k.split(".")[0] if k.startswith("head.") else k for k in dropped}
    info = {
        "llm": str(llm),
        "vision": str(vision),
        "vision_dropped": sorted(heads),
        "new": sorted({k.rsplit(".", 2)[0] for k in own if ".projector." in k}),
        "vocabulary": n,
    }
    log.info(
        "stage-1 start from parts: LLM %s, vision %s (left out: %s), new projector",
        llm,
        vision,
        ", ".join(info["vision_dropped"]) or "nothing",
    )
    return model, processor, info


__all__ = ["PartsError", "build_from_parts", "check_parts", "load_llm", "load_vision"]
