"""Write a stage mixture as its own shard set: the recipe's samples, shuffled across sources
through a bounded buffer, as new WebDataset shards with a ``dataset.json`` and a provenance
ledger (which source and which original key every sample came from).

    vl3data mix mixtures/recipes/demo_stage1.yaml --output out/demo_stage1
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pyarrow as pa

from engine.progress import status as show_status
from manifests import ledger
from manifests.dataset import write_dataset_json
from manifests.shards import ShardSetWriter
from mixtures.page import write_mixture_report
from mixtures.recipe import Recipe
from mixtures.sampler import MixtureDataset

LEDGER_ROWS = 100_000  # provenance rows per ledger part


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def materialise(
    recipe: Recipe,
    out_dir: str | Path,
    *,
    shuffle_buffer: int = 10_000,
    max_count: int = 10_000,
    max_bytes: int = 1_000_000_000,
    epoch: int = 0,
) -> dict:
    """Stream the mixture once (one reader, the whole epoch) into ``out_dir``.

    The shuffle is seeded by the recipe's seed: the same recipe gives the same shard set. Memory
    is bounded by ``shuffle_buffer`` samples. Should reading stop (a damaged source shard:
    :class:`~mixtures.recipe.DamagedShard`), what was written is removed: ``out_dir`` itself
    when this call made it, else its temporary ``*.tar.tmp`` shards."""
    out = Path(out_dir)
    made = not out.exists()
    try:
        return _materialise(recipe, out, shuffle_buffer, max_count, max_bytes, epoch)
    except BaseException:
        if made:
            shutil.rmtree(out, ignore_errors=True)
        else:
            for tmp in (out / "shards").glob("*.tar.tmp"):
                tmp.unlink(missing_ok=True)
        raise


def _materialise(
    recipe: Recipe, out: Path, shuffle_buffer: int, max_count: int, max_bytes: int, epoch: int
) -> dict:
    ds = MixtureDataset(recipe, epoch=epoch, rank=0, world_size=1)
    rng = random.Random(recipe.seed)
    writer = ShardSetWriter(out, _safe(recipe.stage), max_count, max_bytes)
    rows: dict[str, list] = {"key": [], "source": [], "group": [], "source_key": [], "shard": []}
    counts: dict[str, int] = {}
    modalities = {s.name: s.modality for g in recipe.groups for s in g.sources}
    part = 0

    def flush(final: bool = False) -> None:
        nonlocal part
        if rows["key"] and (final or len(rows["key"]) >= LEDGER_ROWS):
            ledger.write_part(out, part, pa.table(rows))
            part += 1
            for v in rows.values():
                v.clear()

    def write(sample: dict) -> None:
        n = sum(counts.values())
        key = f"{n:09d}"
        members = {k: v for k, v in sample.items() if not k.startswith("__")}
        shard = writer.write({"__key__": key, **members})
        src = sample["__source__"]
        counts[src] = counts.get(src, 0) + 1
        for col, val in (
            ("key", key),
            ("source", src),
            ("group", sample["__group__"]),
            ("source_key", sample["__key__"]),
            ("shard", shard),
        ):
            rows[col].append(val)
        flush()
        show_status(f"mix {recipe.stage}: {n + 1} samples written", say=False, force=False)

    buffer: list[dict] = []
    for sample in ds:
        if len(buffer) < shuffle_buffer:
            buffer.append(sample)
            continue
        i = rng.randrange(len(buffer))
        buffer[i], out_sample = sample, buffer[i]
        write(out_sample)
    rng.shuffle(buffer)
    for sample in buffer:
        write(sample)
    flush(final=True)
    shards = writer.close()
    kinds = {modalities[s] for s in counts}
    return write_dataset_json(
        out,
        name=recipe.stage,
        modality=kinds.pop() if len(kinds) == 1 else "mixed",
        task="mixture",
        shards=shards,
        config=json.loads(json.dumps(recipe, default=vars)),
        config_hash=f"seed{recipe.seed}-epoch{epoch}",
        extra={"sources": counts, "shuffle_buffer": shuffle_buffer},
    )


def write_mixture(
    recipe: Recipe,
    out_dir: str | Path,
    *,
    shuffle_buffer: int = 10_000,
    report: dict | None = None,
) -> dict:
    """Materialise ``recipe`` into ``out_dir`` with what a user and a trainer read beside it:
    ``composition.json`` (``report``, :func:`mixtures.report.mixture_report`; computed here
    when not given), ``recipe.yaml`` (the recipe with every source path resolved, so a
    trainer opens this exact mixture from anywhere) and ``report.html`` (:mod:`mixtures.page`).
    Returns the ``dataset.json`` document."""
    import dataclasses

    import yaml

    if report is None:
        from mixtures.report import mixture_report
        from mixtures.sampler import build_plan

        report = mixture_report(recipe, build_plan(recipe))
    doc = materialise(recipe, out_dir, shuffle_buffer=shuffle_buffer)
    out = Path(out_dir)
    (out / "composition.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "recipe.yaml").write_text(
        "# written by vl3data: the recipe this mixture was made from, sources resolved\n"
        + yaml.safe_dump(dataclasses.asdict(recipe), sort_keys=False)
    )
    show_status(f"{recipe.stage}: writing the report", say=False)
    write_mixture_report(out)
    return doc
