"""DiffFP: VideoLLaMA3's pruning of video tokens whose pixels barely change between frames.

How transformers 5.23 applies it. ``VideoLlama3VideoProcessor._preprocess`` computes a boolean
``video_compression_mask`` (one entry per 2×2-merged video token) with ``_get_compression_mask``
when its ``use_token_compression`` kwarg is true (the class default is **True**); the processor
then writes only the kept tokens' ``<|video_pad|>`` placeholders after each ``Time t s:`` label,
and ``VideoLlama3Model.forward`` runs the vision encoder on *every* patch and keeps
``video_embeds[video_compression_mask]`` before scattering them into the placeholders. So DiffFP
shortens the LLM sequence, not the vision encoder's work.

The threshold's unit. ``_get_compression_mask`` compares ``mean |Δ| * 255`` of the processor's
normalised pixels (SigLIP's mean/std 0.5, so values in [-1, 1]) with a hard-wired 0.1: only
patches that are bit-for-bit near-identical between frames are pruned, and on real footage
sampled at 1 fps (codec and JPEG noise) nothing is (see ``bench/bench_difffp.py``). The paper's
"1-norm pixel difference below 0.1" is meant on the pixel scale; we read it as the mean absolute
difference of the normalised pixels (what VideoLLaMA3 forks that fixed this compare:
``pixel_diff / 255 > threshold``), so ``threshold`` here is in those units and is handed to
transformers' own ``_get_compression_mask`` multiplied by :data:`HF_SCALE`.
``threshold=0.1 / HF_SCALE`` reproduces the processor's built-in behaviour exactly.
"""

from __future__ import annotations

import torch

#: transformers' ``_get_compression_mask`` multiplies the mean |Δ| of normalised pixels by this
HF_SCALE = 255.0
#: the threshold ``VideoLlama3VideoProcessor._preprocess`` uses (in its own, ×255 units)
HF_BUILTIN_THRESHOLD = 0.1


def compression_mask(
    video_processor,
    pixel_values_videos: torch.Tensor,
    video_grid_thw: torch.Tensor,
    video_merge_sizes: torch.Tensor,
    threshold: float = 0.1,
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
