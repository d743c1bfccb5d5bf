"""The paper's four training stages as policies: which parameter groups train, at what rate.

VideoLLaMA3 (DESIGN §1) trains in four stages, each starting from the previous one's weights:

=====  ==========================  =========  ==========  =======  ======  ===========
stage  what                        vision     projector   LLM      DiffFP  image merge
=====  ==========================  =========  ==========  =======  ======  ===========
1      vision encoder adaptation   1e-5       1e-3        frozen   off     1x1
2      vision-language alignment   2e-6       1e-5        1e-5     off     1x1
3      multi-task fine-tuning      2e-6       1e-5        1e-5     on      1x1
4      video-centric fine-tuning   2e-6       1e-5        1e-5     on      2x2
=====  ==========================  =========  ==========  =======  ======  ===========

with a cosine schedule after a linear warm-up over 3% of the steps, and video tokens merged 2x2
in every stage. Image tokens are merged 2x2 only in stage 4: the paper (§3.3, "the visual tokens
of images are only downsampled in the video-centric fine-tuning stage") and VideoLLaMA3's
``scripts/train/stage4_2b.sh`` (``--image_merge_size 2``; stages 1-3 pass 1).
A learning rate of 0 freezes its group. transformers' ``VideoLlama3ForConditionalGeneration``
names its parts ``model.vision_model.*`` (the SigLIP-style encoder), ``model.projector.*`` (the
2-layer GELU MLP) and ``model.language_model.*`` + ``lm_head.*`` (the Qwen2 LLM; ``lm_head`` is
tied to the token embeddings when ``tie_word_embeddings`` is set, and then not a parameter of
its own). torch is imported inside the functions that need it.
"""

from __future__ import annotations

import math
from typing import Any

GROUPS = ("vision", "projector", "llm")
STAGES = (1, 2, 3, 4)
WARMUP_RATIO = 0.03
#: DiffFP's threshold readings (model.diffp): VideoLLaMA3's code (the default) and RLT's
DIFF_THRESHOLDS = ("videollama3", "rlt")
DIFF_THRESHOLD = "videollama3"
#: how streaming turns are labelled (model.collate): VideoLLaMA3's (the default), answers only
STREAM_LABELS = ("videollama3", "answers")
#: what a streaming sample's frames are (model.collate): one video clip, as VideoLLaMA3's
#: train.py has them (the default: video merge, DiffFP), or separate images (image merge)
STREAM_FRAMES = ("video", "image")
VIDEO_MERGE_SIZE = 2
IMAGE_MERGE_SIZES = (1, 2)  # what a stage may set: 1 (no merge) or 2 (2x2 bilinear)

#: per stage: learning rate per group (0: frozen), whether DiffFP compresses video tokens (and
#: streaming clips), and the side of the image-token merge (images; streaming frames only with
#: ``data.stream_frames: image``)
PAPER: dict[int, dict[str, Any]] = {
    1: {
        "lr": {"vision": 1e-5, "projector": 1e-3, "llm": 0.0},
        "token_compression": False,
        "image_merge_size": 1,
    },
    2: {
        "lr": {"vision": 2e-6, "projector": 1e-5, "llm": 1e-5},
        "token_compression": False,
        "image_merge_size": 1,
    },
    3: {
        "lr": {"vision": 2e-6, "projector": 1e-5, "llm": 1e-5},
        "token_compression": True,
        "image_merge_size": 1,
    },
    4: {
        "lr": {"vision": 2e-6, "projector": 1e-5, "llm": 1e-5},
        "token_compression": True,
        "image_merge_size": 2,
    },
}

_PREFIXES = {"model.vision_model.": "vision", "model.projector.": "projector"}


def param_group(name: str) -> str:
    """``vision``, ``projector`` or ``llm`` for a parameter name of
    ``VideoLlama3ForConditionalGeneration`` (also when wrapped: a leading ``module.`` from DDP
    is ignored)."""
    name = name.removeprefix("module.")
    for prefix, group in _PREFIXES.items():
        if name.startswith(prefix):
            return group
    if name.startswith(("model.language_model.", "lm_head.")):
        return "llm"
    raise ValueError(f"parameter {name!r} belongs to no group of VideoLLaMA3 {GROUPS}")


def split_parameters(model) -> dict[str, list[tuple[str, Any]]]:
    """``{group: [(name, parameter), ...]}`` over the model's (deduplicated) parameters."""
    out: dict[str, list[tuple[str, Any]]] = {g: [] for g in GROUPS}
    for name, p in model.named_parameters():
        out[param_group(name)].append((name, p))
    return out


def apply_stage(model, lrs: dict[str, float], weight_decay: float = 0.0) -> list[dict]:
    """Freeze the groups whose learning rate is 0, unfreeze the others, and return the
    optimizer's parameter groups: one per trained group, named (``name``) and with its ``lr``.
    Norms and biases get no weight decay."""
    unknown = set(lrs) - set(GROUPS)
    if unknown:
        raise ValueError(f"learning rates for unknown groups {sorted(unknown)}; groups: {GROUPS}")
    param_groups = []
    for group, named in split_parameters(model).items():
        lr = float(lrs.get(group, 0.0))
        for _, p in named:
            p.requires_grad_(lr > 0)
        if lr <= 0 or not named:
            continue
        decay = [p for n, p in named if p.ndim >= 2]
        no_decay = [p for n, p in named if p.ndim < 2]
        for suffix, params, wd in (("", decay, weight_decay), (".no_decay", no_decay, 0.0)):
            if params:
                param_groups.append(
                    {
                        "name": group + suffix,
                        "group": group,
                        "params": params,
                        "lr": lr,
                        "weight_decay": wd,
                    }
                )
    if not param_groups:
        raise ValueError("every group is frozen: nothing to train")
    return param_groups


def make_optimizer(model, lrs: dict[str, float], weight_decay: float = 0.0, **adamw):
    """AdamW over the stage's trainable groups (see :func:`apply_stage`)."""
    import torch

    return torch.optim.AdamW(apply_stage(model, lrs, weight_decay), **adamw)


def warmup_steps(steps: int, warmup_ratio: float = WARMUP_RATIO) -> int:
    """Warm-up steps for a stage of ``steps``: ``ceil(ratio * steps)``, as transformers'
    Trainer counts them."""
    return math.ceil(warmup_ratio * steps)


def make_scheduler(optimizer, steps: int, warmup_ratio: float = WARMUP_RATIO):
    """Linear warm-up over ``ceil(warmup_ratio * steps)`` steps, then cosine decay to 0."""
    from transformers import get_cosine_schedule_with_warmup

    return get_cosine_schedule_with_warmup(optimizer, warmup_steps(steps, warmup_ratio), steps)


def count_parameters(model) -> dict[str, dict[str, int]]:
    """Parameters per group: ``{group: {"total": n, "trainable": n}}``."""
    out = {}
    for group, named in split_parameters(model).items():
        out[group] = {
            "total": sum(p.numel() for _, p in named),
            "trainable": sum(p.numel() for _, p in named if p.requires_grad),
        }
    return out


__all__ = [
    "DIFF_THRESHOLD",
    "DIFF_THRESHOLDS",
    "GROUPS",
    "IMAGE_MERGE_SIZES",
    "PAPER",
    "STAGES",
    "STREAM_FRAMES",
    "STREAM_LABELS",
    "VIDEO_MERGE_SIZE",
    "WARMUP_RATIO",
    "apply_stage",
    "count_parameters",
    "make_optimizer",
    "make_scheduler",
    "param_group",
    "split_parameters",
    "warmup_steps",
]
