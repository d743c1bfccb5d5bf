"""A stage's training data: the mixture as an endless, resumable stream of collated batches.

:class:`Stream` turns a stage's mixture (:func:`mixtures.open_stage`, already seeded and
rank-aware) into epochs without end, leaves out the held-out samples (:mod:`model.heldout`) and
exposes the mixture's position for checkpoints; :func:`draw` turns the next samples into the
collator's micro-batches; :func:`collate_config` is the collator's budgets for a stage. They sit
apart from the loop so benchmarks and tests can feed the exact trainer input without training.
"""

from __future__ import annotations

from model.collate import CollateConfig, Collator
from model.config import TrainConfig
from model.diffp import threshold_value
from model.heldout import is_heldout
from model.presets import get_preset
from model.stages import VIDEO_MERGE_SIZE

MAX_EMPTY_DRAWS = 50  # consecutive batches with no usable sample before giving up


class Stream:
    """A stage's mixture, epoch after epoch, ``take(n)`` samples at a time, with the mixture's
    position for checkpoints."""

    def __init__(self, dataset, holdout: float = 0.0):
        self.ds = dataset
        self.it = None
        self.holdout = holdout  # samples held out for evaluation are never trained on

    def take(self, n: int) -> list[dict]:
        """The next ``n`` samples, starting a new epoch when the mixture runs out; an error when
        a whole epoch gives this rank nothing (it would loop forever)."""
        out: list[dict] = []
        fresh = False
        while len(out) < n:
            if self.it is None:
                self.it = iter(self.ds)
            try:
                sample = next(self.it)
                if self.holdout and is_heldout(sample["__key__"], self.holdout):
                    continue  # not "fresh = False": an epoch of held-out samples gives nothing
                out.append(sample)
                fresh = False
            except StopIteration:
                if fresh:
                    raise RuntimeError(
                        f"the mixture {self.ds.recipe.stage!r} gives this rank no samples"
                    ) from None
                self.ds.set_epoch(self.ds.epoch + 1)
                self.it, fresh = None, True
        return out

    def state_dict(self) -> dict:
        return self.ds.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.ds.load_state_dict(state)
        self.it = None


def draw(stream: Stream, collator, batch_size: int) -> tuple[list[dict], int]:
    """Micro-batches from the next ``batch_size`` samples (more batches while every sample of
    one is skipped), and the samples drawn."""
    drawn = 0
    for _ in range(MAX_EMPTY_DRAWS):
        samples = stream.take(batch_size)
        drawn += len(samples)
        micro = collator(samples)
        if micro:
            return micro, drawn
    raise RuntimeError(
        f"{drawn} samples in a row could not be used; skipped: {dict(collator.skipped)}"
    )


def collate_config(cfg: TrainConfig, n: int) -> CollateConfig:
    """The collator's settings for stage ``n``: the config's budgets, else the preset's; videos
    merged 2x2, images as the stage has it (the paper: 2x2 in stage 4 only); DiffFP as the stage
    has it; streaming clips as ``data.stream_frames`` says (by default videos, as VideoLLaMA3's
    ``train.py`` has them)."""
    p = get_preset(cfg.model.preset)
    return CollateConfig(
        max_length=cfg.data.max_length or p.max_length,
        max_vision_tokens=cfg.data.max_vision_tokens or p.max_vision_tokens,
        video_merge_size=VIDEO_MERGE_SIZE,
        image_merge_size=cfg.stage(n).image_merge_size,
        use_token_compression=bool(cfg.stage(n).token_compression),
        diff_threshold=threshold_value(cfg.data.diff_threshold),
        stream_labels=cfg.data.stream_labels,
        stream_frames=cfg.data.stream_frames,
        tokens_per_batch=cfg.data.tokens_per_batch or p.tokens_per_batch,
    )


def stage_collator(processor, cfg: TrainConfig, n: int) -> Collator:
    """Stage ``n``'s collator over ``processor``, with the processor set to the stage's image
    merge size: transformers' ``VideoLlama3Processor`` counts image placeholders with its image
    processor's own ``merge_size``, so the two must agree (and the processor saved with the
    stage's checkpoints then says how its images were merged)."""
    cc = collate_config(cfg, n)
    set_image_merge_size(processor, cc.image_merge_size)
    return Collator(processor, cc)


def set_image_merge_size(processor, merge_size: int) -> None:
    """Merge image tokens ``merge_size`` x ``merge_size`` in ``processor`` (its image
    processor's ``merge_size``, which sets both the features' merge and the placeholder
    count)."""
    processor.image_processor.merge_size = merge_size


__all__ = [
    "MAX_EMPTY_DRAWS",
    "Stream",
    "collate_config",
    "draw",
    "set_image_merge_size",
    "stage_collator",
]
