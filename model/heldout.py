"""The held-out split: which samples the trainer never trains on and evaluates after a stage.

A sample is held out when its ``__key__`` hashes into the last ``fraction`` of ``[0, 1)``
(:func:`is_heldout`, default 5%). The hash depends on the key alone, so the split is the same in
every recipe and every stage that reads the sample, on every machine; a trainer that skips
``is_heldout`` keys never sees them. :func:`heldout_samples` reads every sample of every source of
a recipe (not just the recipe's selection), skipping the data of the others by seeking over tar
headers.

It is a module of its own, importing nothing else of ``model``, because three layers need the
same answer: the tokenizer (a BPE fitted to held-out answers would flatter their loss), the
trainer's data stream (never train on them) and the evaluation (score exactly them).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

HOLDOUT_FRACTION = 0.05
HOLDOUT_SALT = "vl3data-heldout-v1"  # changing it changes every split


def heldout_score(key: str) -> float:
    """A stable number in ``[0, 1)`` for a sample key (sha1, not Python's per-process hash)."""
    digest = hashlib.sha1(f"{HOLDOUT_SALT}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def check_fraction(fraction: float) -> None:
    """Refuse a fraction that holds out nothing or more than everything."""
    if not 0 < fraction <= 1:
        raise ValueError(f"the held-out fraction must be in (0, 1], got {fraction!r}")


def is_heldout(key: str, fraction: float = HOLDOUT_FRACTION) -> bool:
    """Whether the sample ``key`` is in the held-out ``fraction`` (its score is in the last
    ``fraction`` of ``[0, 1)``; a larger fraction holds out a superset)."""
    check_fraction(fraction)
    return heldout_score(key) >= 1.0 - fraction


def heldout_samples(
    recipe,
    fraction: float = HOLDOUT_FRACTION,
    limit: int | None = None,
) -> list[dict]:
    """The held-out samples of every source of ``recipe`` (a path or a loaded
    :class:`mixtures.recipe.Recipe`), in recipe, shard and tar order, at most ``limit`` per
    source. Each is a raw mixture sample (``__key__``, members as bytes) with ``__source__``,
    ``__group__`` and ``__task__`` (the shard set's ``dataset.json`` task; ``text`` for JSONL)."""
    from manifests.dataset import read_dataset_json
    from manifests.shards import tar_samples
    from mixtures.recipe import Recipe, load_recipe, source_kind
    from mixtures.sampler import jsonl_samples

    check_fraction(fraction)
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of samples per source, got {limit}")
    rec = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)

    def keep(_ordinal: int, key: str) -> bool:
        return heldout_score(key) >= 1.0 - fraction

    out: list[dict] = []
    for _, group, src in rec.sources():
        if source_kind(src) == "jsonl":
            streams = [jsonl_samples(src.path, keep)]
            task = "text"
        else:
            doc = read_dataset_json(src.path)
            streams = [tar_samples(str(Path(src.path) / s["path"]), keep) for s in doc["shards"]]
            task = doc.get("task") or src.modality
        taken = 0
        for stream in streams:
            for sample in stream:
                sample.update({"__source__": src.name, "__group__": group.name, "__task__": task})
                out.append(sample)
                taken += 1
                if limit is not None and taken >= limit:
                    break
            if limit is not None and taken >= limit:
                break
    return out


__all__ = [
    "HOLDOUT_FRACTION",
    "HOLDOUT_SALT",
    "check_fraction",
    "heldout_samples",
    "heldout_score",
    "is_heldout",
]
