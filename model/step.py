"""One optimizer step of the trainer, over one rank's micro-batches.

Kept apart from the loop because it is the part that must be exactly right and is measured on its
own (``bench/bench_train.py``, ``tests/model/test_stages.py``): the loss weighting by answer
tokens, gradient sync on the last micro-batch only, clipping, and the zero term that keeps DDP
whole when a micro-batch has no pixels.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

from model.distributed import Dist
from model.stages import split_parameters

VISION_INPUTS = ("pixel_values", "pixel_values_videos")


def answer_tokens(mb: dict) -> int:
    """Tokens the loss is taken over: labels other than -100, after the causal shift."""
    return int((mb["labels"][:, 1:] != -100).sum())


def train_step(
    model,
    optimizer,
    scheduler,
    micro_batches: list[dict],
    d: Dist | None = None,
    amp: torch.dtype | None = None,
    max_grad_norm: float = 1.0,
    module=None,
) -> dict:
    """One optimizer step over a rank's micro-batches. ``model`` is what to call (the DDP
    wrapper under torch.distributed), ``module`` the bare model (default: ``model``).

    Each micro-batch's mean loss is weighted by its share of the rank's answer tokens, so the
    step's loss is the token mean over them; DDP averages the gradients over ranks on the last
    micro-batch only. A micro-batch with no pixels touches the trained vision and projector
    parameters with a zero term, so every trained parameter gets a gradient on every rank (DDP
    needs that; in stage 1, with the LLM frozen, a text-only micro-batch has nothing else)."""
    d = d or Dist()
    module = module if module is not None else model
    counts = [answer_tokens(mb) for mb in micro_batches]
    total = max(sum(counts), 1)
    visual = [
        p
        for g, named in split_parameters(module).items()
        if g != "llm"
        for _, p in named
        if p.requires_grad
    ]
    device = d.device
    loss_sum, tokens = 0.0, 0
    for i, (mb, n) in enumerate(zip(micro_batches, counts, strict=True)):
        inputs = {k: v.to(device) if torch.is_tensor(v) else v for k, v in mb.items()}
        last = i == len(micro_batches) - 1
        sync = model.no_sync() if hasattr(model, "no_sync") and not last else nullcontext()
        with sync:
            with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                loss = model(**inputs, use_cache=False).loss
            # a micro-batch without answer tokens (none reach here: the collator skips them)
            weighted = loss.float() * (n / total) if n else loss.float().nan_to_num() * 0.0
            if visual and not any(k in inputs for k in VISION_INPUTS):
                weighted = weighted + sum(p.sum() for p in visual) * 0.0
            weighted.backward()
        loss_sum += float(loss.detach()) * n
        tokens += int(inputs["attention_mask"].sum())
    trained = [p for group in optimizer.param_groups for p in group["params"]]
    grad_norm = (
        float(torch.nn.utils.clip_grad_norm_(trained, max_grad_norm))
        if max_grad_norm > 0
        else float("nan")
    )
    lrs = {g["group"]: g["lr"] for g in optimizer.param_groups}
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    loss_sum, n_all, tokens_all = d.sum([loss_sum, float(sum(counts)), float(tokens)])
    return {
        "loss": loss_sum / max(n_all, 1.0),
        "answer_tokens": int(n_all),
        "tokens": int(tokens_all),
        "micro_batches": len(micro_batches),
        "grad_norm": grad_norm,
        "lr": lrs,
    }


__all__ = ["VISION_INPUTS", "answer_tokens", "train_step"]
