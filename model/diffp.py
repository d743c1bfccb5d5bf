"""DiffFP: VideoLLaMA3's pruning of video tokens whose pixels barely change between frames.

How transformers 5.23 applies it. ``VideoLlama3VideoProcessor._preprocess`` computes a boolean
``video_compression_mask`` (one entry per 2×2-merged video token) with ``_get_compression_mask``
when its ``use_token_compression`` kwarg is true (the class default is **True**); the processor
then writes only the kept tokens' ``<|video_pad|>`` placeholders after each ``Time t s:`` label,
and ``VideoLlama3Model.forward`` runs the vision encoder on *every* patch and keeps
``video_embeds[video_compression_mask]`` before scattering them into the placeholders. So DiffFP
shortens the LLM sequence, not the vision encoder's work.

The threshold: three readings. Our ``threshold`` is the mean absolute difference of the
processor's normalised pixels (SigLIP's mean/std 0.5: grey level g becomes g/127.5 - 1, so a
difference d of normalised pixels is d × 127.5 grey levels) over a merged token's patches, and a
token is kept when the difference *exceeds* it. ``data.diff_threshold`` names one of three:

``videollama3`` (default)
    VideoLLaMA3's own code, what the released checkpoints were trained with: both the
    repository (``Videollama3MetaForCausalLM._get_compression_mask``) and transformers' port
    (``VideoLlama3VideoProcessor._get_compression_mask``) keep a token when
    ``mean|Δ| × 255 > 0.1``, i.e. ``mean|Δ| > 0.1 / 255 ≈ 0.00039``, about **0.05 grey levels**:
    only tokens that are bit-for-bit near-identical between frames are pruned, so on real
    footage at 1 fps (codec and JPEG noise) almost nothing is.
``rlt``
    Run-Length Tokenization (Choudhury et al. 2024), which the paper cites for its 0.1: 0.1 on
    ImageNet-normalised pixels (std 0.229 / 0.224 / 0.225 per channel), i.e. a difference of
    0.1 × 255 / mean(1/std) ≈ **5.8 grey levels** (0.1 × 0.229 × 255 = 5.84 on the red
    channel), which is ``mean|Δ| > 0.0452`` here.
a number, e.g. ``0.1``
    Taken in our units: ``0.1`` reads the paper's "1-norm pixel difference below 0.1" on
    SigLIP-normalised pixels, 0.1 × 127.5 = **12.75 grey levels** (what this project used
    before; it prunes a static camera's tokens heavily).

:func:`threshold_value` turns a setting into our units; :func:`compression_mask` hands it to
transformers' own ``_get_compression_mask`` multiplied by :data:`HF_SCALE`, so ``videollama3``
reproduces the processor's built-in behaviour exactly.
"""

from __future__ import annotations

import torch

from model.stages import DIFF_THRESHOLD, DIFF_THRESHOLDS

#: transformers' ``_get_compression_mask`` multiplies the mean |Δ| of normalised pixels by this
HF_SCALE = 255.0
#: the threshold ``VideoLlama3VideoProcessor._preprocess`` uses (in its own, ×255 units)
HF_BUILTIN_THRESHOLD = 0.1
#: grey levels per unit of SigLIP-normalised pixels (mean 0.5, std 0.5: g -> g / 127.5 - 1)
GREY_PER_UNIT = 127.5
#: ImageNet's per-channel std, the normalisation RLT's threshold is on
IMAGENET_STD = (0.229, 0.224, 0.225)
#: RLT's 0.1 in grey levels: mean over channels of |Δg| / (255 std_c) > 0.1, for a grey change
RLT_GREY_LEVELS = 0.1 * 255 / (sum(1 / s for s in IMAGENET_STD) / len(IMAGENET_STD))
#: the named readings of the threshold, in our units (mean |Δ| of SigLIP-normalised pixels)
THRESHOLDS = {
    "videollama3": HF_BUILTIN_THRESHOLD / HF_SCALE,  # the code's: 0.05 grey levels
    "rlt": RLT_GREY_LEVELS / GREY_PER_UNIT,  # RLT's: about 5.8 grey levels
}
DEFAULT_THRESHOLD = DIFF_THRESHOLD
assert set(THRESHOLDS) == set(DIFF_THRESHOLDS)


def threshold_value(setting: str | float) -> float:
    """A threshold setting (a name of :data:`THRESHOLDS` or a number in our units) in our units."""
    if isinstance(setting, str):
        if setting in THRESHOLDS:
            return THRESHOLDS[setting]
        raise ValueError(f"{setting!r} is not one of {', '.join(THRESHOLDS)} or a number")
    return float(setting)


def grey_levels(threshold: float) -> float:
    """A threshold in our units as a difference of grey levels (0-255)."""
    return threshold * GREY_PER_UNIT


def compression_mask(
    video_processor,
    pixel_values_videos: torch.Tensor,
    video_grid_thw: torch.Tensor,
    video_merge_sizes: torch.Tensor,
    threshold: float = THRESHOLDS[DEFAULT_THRESHOLD],
) -> torch.Tensor:
    """The DiffFP keep-mask (flat, one bool per merged video token, videos concatenated) from
    transformers' ``VideoLlama3VideoProcessor._get_compression_mask``, with ``threshold`` in
    units of mean |Δ| of normalised pixels (module docs). The first frame of a video and at
    least one token per frame are always kept."""
    return video_processor._get_compression_mask(
        pixel_values_videos=pixel_values_videos,
        video_grid_thw=video_grid_thw,
        video_merge_sizes=video_merge_sizes,
        threshold=threshold * HF_SCALE,
    )


def prune_placeholders(input_ids: torch.Tensor, video_token_id: int, mask: torch.Tensor):
    """Drop the ``<|video_pad|>`` placeholders of pruned tokens from a 1-D ``input_ids`` that
    has one placeholder per video token (processed with ``use_token_compression=False``).

    Placeholders and mask entries line up one to one: the processor writes them frame by frame
    in the order the mask is laid out, and the model scatters the kept features in the same
    order; the result is what the processor itself writes with compression on."""
    is_pad = input_ids == video_token_id
    n_pads = int(is_pad.sum())
    if n_pads != mask.numel():
        raise ValueError(f"{n_pads} video placeholders for a mask of {mask.numel()} tokens")
    keep = torch.ones_like(is_pad)
    keep[is_pad] = mask.to(torch.bool)
    return input_ids[keep]
