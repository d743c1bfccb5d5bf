"""The four training stages' data mixtures, as recipes over shard sets.

A **recipe** (YAML, :mod:`mixtures.recipe`) names a stage's groups of sources (shard sets, or
JSONL files for text-only data) and how much of each to take (``all``, ``first:N``,
``random:N%``, ``repeat:K``, ...). :func:`open_stage` turns it into a seeded, worker- and
rank-aware ``torch.utils.data.IterableDataset`` (:mod:`mixtures.sampler`) that streams the
stage's raw WebDataset samples in the recipe's proportions and resumes mid-epoch::

    import mixtures, torch
    ds = mixtures.open_stage("mixtures/recipes/stage1.yaml")
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=4)

The paper's four stages are in ``mixtures/recipes/``; ``vl3data mix RECIPE --check`` checks a
recipe against the file system and prints its plan. Shard sets are read through ``manifests``.
Importing this package does not import torch; the dataset class loads it on first use.
"""

from __future__ import annotations

from typing import Any

from mixtures.recipe import (
    Group,
    Recipe,
    Source,
    Strategy,
    check_recipe,
    load_recipe,
    parse_strategy,
)

_LAZY = ("MixtureDataset", "open_stage", "build_plan", "iter_reader", "format_summary", "Plan")

__all__ = [
    "Group",
    "MixtureDataset",
    "Plan",
    "Recipe",
    "Source",
    "Strategy",
    "build_plan",
    "check_recipe",
    "format_summary",
    "iter_reader",
    "load_recipe",
    "open_stage",
    "parse_strategy",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from mixtures import sampler

        return getattr(sampler, name)
    raise AttributeError(f"module 'mixtures' has no attribute {name!r}")
