"""The plan and the stream: a stage's samples, in the recipe's proportions, split across readers.

* **Plan** (:func:`build_plan`): per source, its shards and their sample counts (from
  ``dataset.json``; a JSONL text source is one "shard" of its non-blank lines) and the
  **selection**: which sample indices the strategy takes, sorted, per shard. ``random:`` draws
  are seeded by ``(recipe.seed, source name)``, so a source's subset does not change when other
  sources are added. ``repeat:K`` takes the selection K times. A source with an ``amount``
  of M samples out of A available takes ``M // A`` whole passes (``times``) plus a remainder of
  ``M % A`` samples (``extra``) picked by its strategy (``first``; ``random`` and ``all``: a
  seeded random subset); with ``M <= A`` that is one pass over M picked samples.
* **Epoch sequence**: per source, K passes over its selected samples (then one over ``extra``),
  shard by shard, the shard order shuffled per pass and per epoch (seeded by
  ``(seed, epoch, source)``); inside a shard
  samples stay in tar order, so tars are read front to back.
* **Readers**: ``world = ranks x DataLoader workers``. Reader ``r`` of ``R`` takes the contiguous
  slice ``[r*L//R, (r+1)*L//R)`` of each source's epoch sequence of length ``L``: readers are
  disjoint, together they are the epoch, every reader gets the same share (within one sample)
  of every source, and each reads only its own run of shards (at most the first and last of
  its run are shared with a neighbour, and the part before its start is skipped by seeking
  over tar headers, never read).
* **Interleaving**: each reader draws its next source with probability proportional to that
  source's remaining count (an RNG seeded by ``(seed, epoch, rank, worker)``): a uniformly
  random interleaving, so at every point of the epoch each source's share follows the recipe,
  and the order is a pure function of the seed and epoch.
* **Resume**: a reader's state is ``{epoch, position}``. Restarting at ``position`` replays the
  schedule (RNG only), counts how many samples each source had given, and seeks past them: the
  samples before plus the samples after are exactly one uninterrupted epoch.
"""

from __future__ import annotations

import os
import tarfile
import warnings
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from manifests.dataset import read_dataset_json
from manifests.shards import Keep, tar_samples
from mixtures.recipe import (
    DamagedShard,
    Recipe,
    Source,
    count_jsonl,
    load_recipe,
    parse_strategy,
    source_kind,
)

try:  # torch is optional for the plan; MixtureDataset is a real IterableDataset when present
    from torch.utils.data import IterableDataset as _IterableBase
except ImportError:  # pragma: no cover - torch is installed wherever we train
    _IterableBase = object  # type: ignore[assignment,misc]

_SCHEDULE_CHUNK = 4096
Selection = range | np.ndarray


def name_seed(name: str) -> int:
    """A stable 32-bit number for a source name (Python's ``hash`` changes per process)."""
    return zlib.crc32(name.encode("utf-8"))


@dataclass
class SourcePlan:
    """One source's shards and selection."""

    name: str
    group: str
    modality: str
    strategy: str
    target: int | None
    kind: str  # shards | jsonl
    shards: list[str]  # absolute paths of tars (or the one JSONL file)
    shard_samples: list[int]
    selection: list[Selection]  # per shard: sorted local sample indices taken
    times: int = 1  # repeat:K, or whole passes of an amount above the source's size
    short: int = 0  # samples the strategy (or amount) asked for but the source does not hold
    amount: int | None = None  # samples per epoch the recipe's ``amount`` asks for
    extra: list[Selection] = field(default_factory=list)  # per shard: an amount's remainder

    @property
    def available(self) -> int:
        return sum(self.shard_samples)

    @property
    def selected(self) -> int:
        return sum(len(s) for s in self.selection)

    @property
    def epoch_samples(self) -> int:
        return self.selected * self.times + sum(len(s) for s in self.extra)


@dataclass
class Plan:
    """Everything a reader needs, built once from the recipe (cheap to pickle to workers)."""

    stage: str
    seed: int
    sources: list[SourcePlan] = field(default_factory=list)
    group_targets: dict[str, int | None] = field(default_factory=dict)
    total: int | None = None  # the recipe's samples per epoch, if it gives one

    @property
    def epoch_samples(self) -> int:
        return sum(sp.epoch_samples for sp in self.sources)

    def summary(self) -> list[dict]:
        """One row per source: what is there, what the strategy takes, the share, the target."""
        total = self.epoch_samples or 1
        return [
            {
                "group": sp.group,
                "source": sp.name,
                "modality": sp.modality,
                "strategy": sp.strategy,
                "available": sp.available,
                "selected": sp.selected,
                "epoch_samples": sp.epoch_samples,
                "share": sp.epoch_samples / total,
                "target": sp.target,
                "short": sp.short,
                "amount": sp.amount,
            }
            for sp in self.sources
        ]


def _pick(kind: str, counts: list[int], take: int, seed: int, name: str) -> list[Selection]:
    """Per-shard sorted local indices of ``take`` samples: the first ones (``first``) or a
    random subset seeded by ``(seed, name)`` (``random``, and ``all`` when it cannot take all)."""
    available = sum(counts)
    if take >= available:
        return [range(n) for n in counts]
    if kind == "first":
        out, left = [], take
        for n in counts:
            out.append(range(min(n, left)))
            left -= len(out[-1])
        return out
    rng = np.random.default_rng([seed, name_seed(name)])
    chosen = np.sort(rng.choice(available, size=take, replace=False)).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    cuts = np.searchsorted(chosen, offsets)
    return [chosen[cuts[i] : cuts[i + 1]] - offsets[i] for i in range(len(counts))]


def _select(src: Source, counts: list[int], seed: int) -> tuple[list[Selection], int]:
    """Per-shard sorted local indices the strategy takes, and how many it came short."""
    strat = parse_strategy(src.strategy)
    available = sum(counts)
    if strat.kind in ("all", "repeat"):
        return [range(n) for n in counts], 0
    wanted = strat.amount(available)
    take = min(wanted, available)
    return _pick(strat.kind, counts, take, seed, src.name), wanted - take


def _select_amount(
    src: Source, counts: list[int], seed: int, amount: int
) -> tuple[list[Selection], int, list[Selection], int]:
    """An ``amount`` of M samples out of A: ``(selection, times, extra, short)`` with
    ``times = M // A`` whole passes and ``extra`` the ``M % A`` remainder picked by the
    strategy; when ``M < A`` the selection is the M picked samples, once. ``short`` is M when
    the source is empty."""
    kind = src.parsed.kind
    available = sum(counts)
    if available == 0:
        return [range(0) for _ in counts], 1, [], amount
    passes, rest = divmod(amount, available)
    if passes == 0:
        return _pick(kind, counts, rest, seed, src.name), 1, [], 0
    extra = _pick(kind, counts, rest, seed, src.name) if rest else []
    return [range(n) for n in counts], passes, extra, 0


def build_plan(recipe: Recipe) -> Plan:
    """Read every source's ``dataset.json`` (or count its JSONL lines) and select its samples.

    A missing source raises ``FileNotFoundError``, a modality that disagrees with
    ``dataset.json`` raises ``ValueError``; an amount that cannot be met takes what there is and
    warns (``check_recipe`` lists all of these up front)."""
    plan = Plan(
        stage=recipe.stage,
        seed=recipe.seed,
        group_targets={g.name: g.target for g in recipe.groups},
        total=recipe.total,
    )
    amounts = recipe.amounts()
    for where, group, src in recipe.sources():
        if source_kind(src) == "jsonl":
            if not Path(src.path).is_file():
                raise FileNotFoundError(f"{where} ({src.name}): no JSONL file at {src.path}")
            shards, counts = [src.path], [count_jsonl(src.path)]
        else:
            doc = read_dataset_json(src.path)
            if doc.get("modality") and doc["modality"] != src.modality:
                raise ValueError(
                    f"{where}.modality: {src.name} is {src.modality} in the recipe but "
                    f"{doc['modality']} in {src.path}/dataset.json"
                )
            shards = [str(Path(src.path) / s["path"]) for s in doc["shards"]]
            counts = [int(s["samples"]) for s in doc["shards"]]
        amount = amounts.get(src.name)
        extra: list[Selection] = []
        if amount is None:
            selection, short = _select(src, counts, recipe.seed)
            times = parse_strategy(src.strategy).times
        else:
            selection, times, extra, short = _select_amount(src, counts, recipe.seed, amount)
        if short:
            what = src.strategy if amount is None else f"amount {src.amount!r}"
            warnings.warn(
                f"{where} ({src.name}): {what} is {short} samples short of what it asks "
                f"for; taking all {sum(counts)}",
                stacklevel=2,
            )
        plan.sources.append(
            SourcePlan(
                name=src.name,
                group=group.name,
                modality=src.modality,
                strategy=src.strategy,
                target=src.target,
                kind=source_kind(src),
                shards=shards,
                shard_samples=counts,
                selection=selection,
                times=times,
                short=short,
                amount=amount,
                extra=extra,
            )
        )
    return plan


# --- one source's part of the epoch, for one reader ------------------------------------------


def epoch_sequence(sp: SourcePlan, seed: int, epoch: int) -> list[tuple[int, Selection]]:
    """The source's epoch as ``(shard index, local indices)`` runs: ``times`` passes, each over
    the shards holding selected samples in a per-pass, per-epoch shuffled order, then (for an
    ``amount`` that is not a whole number of passes) one pass over ``extra`` likewise."""
    nonempty = [i for i, sel in enumerate(sp.selection) if len(sel)]
    rng = np.random.default_rng([seed, epoch, name_seed(sp.name), 1])
    out = []
    for _ in range(sp.times):
        order = rng.permutation(len(nonempty))
        out.extend((nonempty[j], sp.selection[nonempty[j]]) for j in order)
    rest = [i for i, sel in enumerate(sp.extra) if len(sel)]
    if rest:
        order = rng.permutation(len(rest))
        out.extend((rest[j], sp.extra[rest[j]]) for j in order)
    return out


def reader_slice(
    sp: SourcePlan, seed: int, epoch: int, reader: int, readers: int
) -> list[tuple[int, Selection]]:
    """Reader ``reader``'s contiguous slice ``[r*L//R, (r+1)*L//R)`` of the epoch sequence."""
    total = sp.epoch_samples
    lo, hi = reader * total // readers, (reader + 1) * total // readers
    out, at = [], 0
    for shard, sel in epoch_sequence(sp, seed, epoch):
        n = len(sel)
        a, b = max(lo, at), min(hi, at + n)
        if a < b:
            out.append((shard, sel[a - at : b - at]))
        at += n
        if at >= hi:
            break
    return out


def jsonl_samples(path: str, keep: Keep) -> Iterator[dict]:
    """The records of a JSONL file (non-blank lines) that ``keep`` accepts, as raw samples
    ``{"__key__": "{stem}-{ordinal:09d}", "json": bytes}``."""
    stem = Path(path).stem
    ordinal = -1
    with open(path, "rb") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            ordinal += 1
            key = f"{stem}-{ordinal:09d}"
            verdict = keep(ordinal, key)
            if verdict is None:
                return
            if verdict:
                yield {"__key__": key, "__url__": path, "json": line}


def _at_ordinals(wanted: Selection) -> tuple[Keep, Callable[[], int]]:
    """A ``keep`` for the sorted ordinals ``wanted`` (ending after the last), and the highest
    ordinal it was asked about."""
    want = {int(i) for i in wanted}
    last = int(wanted[-1])
    seen = [-1]

    def keep(ordinal: int, _key: str) -> bool | None:
        seen[0] = ordinal
        return None if ordinal > last else ordinal in want

    return keep, lambda: seen[0]


def _iter_tar(path: str, wanted: Selection) -> Iterator[dict]:
    """The samples at sorted ordinals ``wanted`` of one tar."""
    if not len(wanted):
        return
    keep, seen = _at_ordinals(wanted)
    try:
        yield from tar_samples(path, keep)
    except (tarfile.TarError, OSError, EOFError) as exc:  # truncated, emptied, not a tar
        raise DamagedShard(path, f"cannot be read as a tar ({exc})") from None
    if seen() < int(wanted[-1]):
        raise DamagedShard(
            path,
            f"holds {seen() + 1} samples but sample {int(wanted[-1])} was wanted: the shard "
            "does not match its dataset.json",
        )


def _iter_jsonl(path: str, wanted: Selection) -> Iterator[dict]:
    """The records at sorted ordinals ``wanted`` of a JSONL file."""
    if not len(wanted):
        return
    keep, _ = _at_ordinals(wanted)
    yield from jsonl_samples(path, keep)


def source_stream(
    sp: SourcePlan, runs: list[tuple[int, Selection]], skip: int = 0
) -> Iterator[dict]:
    """Read one reader's runs of a source in order, after skipping the first ``skip`` samples
    (whole runs are dropped without opening their shard)."""
    read = _iter_jsonl if sp.kind == "jsonl" else _iter_tar
    for shard, sel in runs:
        if skip >= len(sel):
            skip -= len(sel)
            continue
        yield from read(sp.shards[shard], sel[skip:])
        skip = 0


# --- interleaving -----------------------------------------------------------------------------


def schedule(counts: list[int], rng: np.random.Generator) -> Iterator[int]:
    """Source indices, one per sample: each draw picks a source with probability proportional to
    its remaining count, until all counts are used up. Uniforms are drawn in fixed chunks so
    replaying the schedule reproduces it exactly."""
    remaining = list(counts)
    total = sum(remaining)
    while total > 0:
        for u in rng.random(_SCHEDULE_CHUNK).tolist():
            if total == 0:
                return
            x = u * total
            pick = -1
            for i, c in enumerate(remaining):
                if c and x < c:
                    pick = i
                    break
                x -= c
            if pick < 0:  # u * total rounded up to total: the last source with samples left
                pick = max(i for i, c in enumerate(remaining) if c)
            remaining[pick] -= 1
            total -= 1
            yield pick


def iter_reader(
    plan: Plan,
    epoch: int,
    rank: int,
    world_size: int,
    worker: int = 0,
    num_workers: int = 1,
    start: int = 0,
) -> Iterator[dict]:
    """One reader's samples for ``epoch`` from ``position`` ``start`` on. Reader index is
    ``rank * num_workers + worker`` of ``world_size * num_workers``. Each sample is the raw
    webdataset dict (``__key__``, members as bytes) plus ``__source__``, ``__group__``,
    ``__position__`` (its position in this reader's epoch) and ``__worker__``."""
    readers = world_size * num_workers
    reader = rank * num_workers + worker
    if not (0 <= rank < world_size and 0 <= worker < num_workers):
        raise ValueError(f"rank {rank} of {world_size}, worker {worker} of {num_workers}")
    runs = [reader_slice(sp, plan.seed, epoch, reader, readers) for sp in plan.sources]
    counts = [sum(len(sel) for _, sel in r) for r in runs]
    if not 0 <= start <= sum(counts):
        raise ValueError(
            f"position {start} is outside this reader's epoch of {sum(counts)} samples "
            "(was the state saved with another world size or recipe?)"
        )
    sched = schedule(counts, np.random.default_rng([plan.seed, epoch, rank, worker]))
    consumed = [0] * len(counts)
    for _ in range(start):
        consumed[next(sched)] += 1
    streams = [
        source_stream(sp, r, skip=c) for sp, r, c in zip(plan.sources, runs, consumed, strict=True)
    ]
    position = start
    for i in sched:
        sp = plan.sources[i]
        try:
            sample = next(streams[i])
        except StopIteration:
            raise RuntimeError(
                f"source {sp.name} ended early: its shards hold fewer samples than dataset.json"
            ) from None
        sample["__source__"] = sp.name
        sample["__group__"] = sp.group
        sample["__position__"] = position
        sample["__worker__"] = worker
        position += 1
        yield sample


# --- the torch-facing dataset -----------------------------------------------------------------


def _default_rank_world() -> tuple[int, int]:
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
    except ImportError:  # pragma: no cover
        pass
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def _worker() -> tuple[int, int]:
    try:
        from torch.utils.data import get_worker_info
    except ImportError:  # pragma: no cover
        return 0, 1
    info = get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


class MixtureDataset(_IterableBase):
    """A stage's mixture as a ``torch.utils.data.IterableDataset``: worker- and rank-aware,
    deterministic for a seed and epoch, resumable mid-epoch.

    ``rank``/``world_size`` default to ``torch.distributed`` when it is initialised, else the
    ``RANK``/``WORLD_SIZE`` environment variables, else 0/1; DataLoader workers are found with
    ``get_worker_info()``. Call :meth:`set_epoch` before each epoch.
    """

    def __init__(
        self,
        recipe_or_path: Recipe | str | os.PathLike,
        epoch: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        overrides: list[str] | None = None,
    ):
        super().__init__()
        if isinstance(recipe_or_path, Recipe):
            self.recipe = recipe_or_path
        else:
            self.recipe = load_recipe(recipe_or_path, overrides)
        self.plan = build_plan(self.recipe)
        self.epoch = epoch
        self.rank, self.world_size = rank, world_size
        self._start: int | list[int] = 0
        self._position = 0

    @property
    def epoch_samples(self) -> int:
        """Samples in one epoch, over all ranks and workers."""
        return self.plan.epoch_samples

    def summary(self) -> list[dict]:
        return self.plan.summary()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self._start, self._position = 0, 0

    def _where(self) -> tuple[int, int, int, int]:
        rank, world = self.rank, self.world_size
        if rank is None or world is None:
            d_rank, d_world = _default_rank_world()
            rank = d_rank if rank is None else rank
            world = d_world if world is None else world
        worker, workers = _worker()
        return rank, world, worker, workers

    def __iter__(self) -> Iterator[dict]:
        rank, world, worker, workers = self._where()
        start = self._start[worker] if isinstance(self._start, list) else self._start
        self._start = 0  # a resume applies once; the next iteration starts the epoch afresh
        self._position = start
        for sample in iter_reader(self.plan, self.epoch, rank, world, worker, workers, start):
            self._position += 1
            yield sample

    def state_dict(self) -> dict:
        """``{"epoch", "position"}``: samples this reader has yielded in this epoch. (Inside a
        DataLoader worker this is that worker's state, which is what ``torchdata``'s
        ``StatefulDataLoader`` collects; with a plain DataLoader, build the state from the
        ``__position__`` of the last sample seen from each ``__worker__``.)"""
        return {"epoch": self.epoch, "position": self._position}

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state``: ``position`` is an int (one reader) or a list of ints
        indexed by DataLoader worker id."""
        position = state.get("position", 0)
        if isinstance(position, list | tuple):
            position = [int(p) for p in position]
        else:
            position = int(position)
        self.epoch = int(state.get("epoch", 0))
        self._start = position
        self._position = position if isinstance(position, int) else 0


def open_stage(path: str | os.PathLike | Recipe, **kw) -> MixtureDataset:
    """Open a stage recipe as an iterable over its samples (see :class:`MixtureDataset`)."""
    return MixtureDataset(path, **kw)


def format_summary(plan: Plan) -> str:
    """The plan as a text table, with the paper's targets beside what the recipe will give
    (a group line follows each group with its total and the group's target)."""
    total = plan.epoch_samples or 1
    head = ("group", "source", "modality", "strategy", "available", "epoch", "share", "target")
    lines = [head]

    def fmt(n: int | None) -> str:
        return "-" if n is None else f"{n:,}"

    rows = plan.summary()
    for g, target in plan.group_targets.items():
        mine = [r for r in rows if r["group"] == g]
        for r in mine:
            epoch = fmt(r["epoch_samples"]) + (f" ({r['short']:,} short)" if r["short"] else "")
            lines.append(
                (
                    g,
                    r["source"],
                    r["modality"],
                    r["strategy"] if r["amount"] is None else f"{r['strategy']} {fmt(r['amount'])}",
                    fmt(r["available"]),
                    epoch,
                    f"{100 * r['share']:.1f}%",
                    fmt(r["target"]),
                )
            )
        n = sum(r["epoch_samples"] for r in mine)
        lines.append((g, "(group)", "", "", "", fmt(n), f"{100 * n / total:.1f}%", fmt(target)))
    lines.append(("total", "", "", "", "", fmt(plan.epoch_samples), "100.0%", ""))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(head))]
    return "\n".join(
        "  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


__all__ = [
    "MixtureDataset",
    "Plan",
    "SourcePlan",
    "build_plan",
    "epoch_sequence",
    "format_summary",
    "iter_reader",
    "open_stage",
    "reader_slice",
    "schedule",
]
