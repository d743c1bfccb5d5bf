"""Which floating-point precision a forward pass runs in: one rule for training and evaluation.

A module of its own (importing nothing else of ``model``, and torch only when asked) so that the
config can validate ``train.precision`` and both the trainer and ``python -m model.evaluate`` can
pick the same autocast dtype without importing each other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

PRECISIONS = ("auto", "bf16", "fp32")


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 where it runs well (``auto``: CUDA with bf16 support), else None (fp32)."""
    import torch

    if precision == "bf16":
        return torch.bfloat16
    if precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


__all__ = ["PRECISIONS", "autocast_dtype"]
