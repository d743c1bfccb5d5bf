"""Stage recipes: which shard sets a training stage mixes, and how much of each.

A recipe is one YAML file::

    stage: stage1
    seed: 0
    groups:
      - name: scene_images
        sources:
          - name: syn7m_short
            path: /data/vl3/syn7m_short  # a shard set directory (has dataset.json)
            modality: image              # image | video | text
            strategy: all                # all, first:N, first:P%, random:N, random:P%, repeat:K
            target: null                 # the paper's table amount, for reporting only
            amount: null                 # optional: samples per epoch: N, a fraction, or "P%"
        target: 11840000                 # a group may carry the table's amount too
    total: null                          # samples per epoch of the stage; fractions need it

Relative paths are relative to the recipe file's folder. A text source may instead be a ``.jsonl``
file of ``{"conversations": [...]}`` records, one per line. Anything wrong with a field raises
:class:`~manifests.configs.ConfigError` naming it (``groups[1].sources[0].strategy``);
:func:`check_recipe` finds what only the file system can tell (missing sets, amounts that cannot be
met, a modality that disagrees with ``dataset.json``, a shard truncated, emptied or otherwise not
the size and sample count its ``dataset.json`` declares).
"""

from __future__ import annotations

import json
import math
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from manifests.configs import ConfigError, from_dict, merge, parse_yaml, require
from manifests.dataset import DATASET_JSON
from manifests.shards import tar_samples

MODALITIES = ("image", "video", "text")
STRATEGY_FORMS = "all, first:N, first:P%, random:N, random:P%, repeat:K"
_STRATEGY_RE = re.compile(r"^(all|first|random|repeat)(?::\s*([0-9]+(?:\.[0-9]+)?)\s*(%?))?$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_PERCENT_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*%\s*$")
AMOUNT_FORMS = "a whole number of samples N >= 0, a fraction of the stage in (0, 1], or 'P%'"
AMOUNT_STRATEGIES = ("all", "first", "random")


class Amount(NamedTuple):
    """A parsed ``amount``: an absolute count, or a fraction of the stage's ``total``."""

    count: int | None = None
    fraction: float | None = None

    def resolve(self, total: int | None) -> int:
        """Samples per epoch; a fraction is ``floor(fraction * total)``."""
        if self.count is not None:
            return self.count
        assert self.fraction is not None and total is not None
        return math.floor(self.fraction * total + 1e-9)


def parse_amount(value: Any) -> Amount:
    """``1000`` (samples), ``0.25`` (a float in (0, 1]: a fraction of the stage) or ``"25%"``.

    Raises ``ValueError`` saying what is wrong."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not an amount")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{value!r}: a count of samples must be 0 or more")
        return Amount(count=value)
    if isinstance(value, float):
        if not 0 < value <= 1:
            raise ValueError(
                f"{value!r}: a float is a fraction of the stage and must be above 0 and at most "
                "1; write a whole number (no '.0') for a count of samples"
            )
        return Amount(fraction=value)
    if isinstance(value, str):
        text = value.strip()
        m = _PERCENT_RE.match(text)
        if m:
            pct = float(m.group(1))
            if not 0 < pct <= 100:
                raise ValueError(f"{value!r}: a percentage must be above 0 and at most 100")
            return Amount(fraction=pct / 100)
        if text.isdigit():
            return Amount(count=int(text))
    raise ValueError(f"{value!r} is not an amount")


def parse_pick(text: str) -> Strategy:
    """A strategy beside an ``amount``: ``all``, ``first`` or ``random`` (only how samples are
    picked; the amount says how many)."""
    kind = str(text).strip()
    if kind in AMOUNT_STRATEGIES:
        return Strategy(kind)
    parsed = parse_strategy(text)  # raises for what is not a strategy at all
    raise ValueError(
        f"{text!r} says how many and so does amount: with amount, strategy is only how they "
        f"are picked ({', '.join(AMOUNT_STRATEGIES)})"
        + (
            ", and repeat:K is not allowed (amount above the set's size repeats it)"
            if parsed.kind == "repeat"
            else ""
        )
    )


class Strategy(NamedTuple):
    """A parsed ``strategy`` string."""

    kind: str  # all | first | random | repeat
    count: int | None = None  # first:N, random:N
    percent: float | None = None  # first:P%, random:P%
    times: int = 1  # repeat:K

    def amount(self, available: int) -> int:
        """How many distinct samples this strategy asks for out of ``available``."""
        if self.kind in ("all", "repeat"):
            return available
        if self.percent is not None:
            return math.floor(available * self.percent / 100 + 1e-9)
        assert self.count is not None
        return self.count


def parse_strategy(text: str) -> Strategy:
    """Parse ``all``, ``first:N``, ``first:P%``, ``random:N``, ``random:P%`` or ``repeat:K``.

    Raises ``ValueError`` with a message that says what is wrong."""
    m = _STRATEGY_RE.match(str(text).strip())
    if not m:
        raise ValueError(f"{text!r} is not a strategy; use one of {STRATEGY_FORMS}")
    kind, number, pct = m.group(1), m.group(2), m.group(3)
    if kind == "all":
        if number is not None:
            raise ValueError(f"{text!r}: 'all' takes no amount")
        return Strategy("all")
    if number is None:
        raise ValueError(f"{text!r}: '{kind}' needs an amount, e.g. {kind}:1000")
    value = float(number)
    if kind == "repeat":
        if pct or value != int(value) or int(value) < 1:
            raise ValueError(f"{text!r}: repeat:K needs a whole number K >= 1 of passes")
        return Strategy("repeat", times=int(value))
    if pct:
        if not 0 < value <= 100:
            raise ValueError(f"{text!r}: a percentage must be above 0 and at most 100")
        return Strategy(kind, percent=value)
    if value != int(value) or int(value) < 1:
        raise ValueError(f"{text!r}: {kind}:N needs a whole number N >= 1 of samples")
    return Strategy(kind, count=int(value))


@dataclass
class Source:
    """One shard set (or, for text, a JSONL file) and how much of it the stage takes."""

    name: str = ""
    path: str = ""
    modality: str = "image"
    strategy: str = "all"
    target: int | None = None  # the paper's table amount: reported beside the plan, not enforced
    # samples per epoch: an int, a fraction of the stage (float in (0, 1]) or "P%"; None: the
    # strategy decides. Typed Any so YAML's 1.0 stays a fraction (from_dict would make it 1).
    amount: Any = None

    def __post_init__(self) -> None:
        require(bool(self.name), "name", "every source needs a name", "e.g. name: syn7m_short")
        require(
            bool(_NAME_RE.match(self.name)),
            "name",
            f"{self.name!r} must be letters, digits, '_', '-', '.' or '+'",
        )
        require(
            bool(str(self.path).strip()),
            "path",
            "every source needs a path",
            "a shard set directory with dataset.json, or a .jsonl file for text",
        )
        require(
            self.modality in MODALITIES,
            "modality",
            f"{self.modality!r} is not one of {MODALITIES}",
        )
        require(
            not str(self.path).endswith(".jsonl") or self.modality == "text",
            "path",
            f"a .jsonl file is only a source for modality text, not {self.modality}",
            "point image and video sources at a shard set directory",
        )
        if self.amount is not None:
            try:
                parse_amount(self.amount)
            except ValueError as exc:
                raise ConfigError("amount", str(exc), AMOUNT_FORMS) from None
            try:
                parse_pick(self.strategy)
            except ValueError as exc:
                raise ConfigError("strategy", str(exc), "strategy: random") from None
        else:
            try:
                parse_strategy(self.strategy)
            except ValueError as exc:
                raise ConfigError("strategy", str(exc), STRATEGY_FORMS) from None
        require(
            self.target is None or self.target >= 0,
            "target",
            "must be a sample count of 0 or more, or null",
        )

    @property
    def parsed(self) -> Strategy:
        return (
            parse_pick(self.strategy) if self.amount is not None else parse_strategy(self.strategy)
        )

    @property
    def parsed_amount(self) -> Amount | None:
        return None if self.amount is None else parse_amount(self.amount)


@dataclass
class Group:
    """A named part of a stage's mixture (e.g. scene images), holding one or more sources."""

    name: str = ""
    sources: list[Source] = field(default_factory=list)
    target: int | None = None  # the paper's table amount for the whole group, for reporting

    def __post_init__(self) -> None:
        require(bool(self.name), "name", "every group needs a name", "e.g. name: scene_images")
        require(bool(self.sources), "sources", "a group needs at least one source")
        require(
            self.target is None or self.target >= 0,
            "target",
            "must be a sample count of 0 or more, or null",
        )


@dataclass
class Recipe:
    """One training stage's mixture."""

    stage: str = ""
    seed: int = 0
    groups: list[Group] = field(default_factory=list)
    total: int | None = None  # samples per epoch of the stage: what fractional amounts are of

    def __post_init__(self) -> None:
        require(bool(self.stage), "stage", "the recipe needs a stage name", "e.g. stage: stage1")
        require(self.seed >= 0, "seed", "must be 0 or more")
        require(bool(self.groups), "groups", "the recipe needs at least one group of sources")
        seen_groups: set[str] = set()
        seen: dict[str, str] = {}
        for g, group in enumerate(self.groups):
            require(
                group.name not in seen_groups,
                f"groups[{g}].name",
                f"group {group.name!r} appears twice",
            )
            seen_groups.add(group.name)
            for s, src in enumerate(group.sources):
                where = f"groups[{g}].sources[{s}]"
                require(
                    src.name not in seen,
                    f"{where}.name",
                    f"source {src.name!r} is already {seen.get(src.name)}",
                    "source names seed their selection and tag every sample: make them unique",
                )
                seen[src.name] = where
        require(
            self.total is None or self.total >= 1,
            "total",
            "must be a number of samples per epoch of 1 or more, or null",
        )
        fractions = 0.0
        for where, _, src in self.sources():
            amount = src.parsed_amount
            if amount is None or amount.fraction is None:
                continue
            require(
                self.total is not None,
                f"{where}.amount",
                f"{src.amount!r} is a fraction of the stage but the recipe has no total",
                "set total: N at the top (samples per epoch of the stage), or give a count",
            )
            fractions += amount.fraction
        require(
            fractions <= 1 + 1e-9,
            "total",
            f"the sources' fractional amounts sum to {fractions:.4g} ({100 * fractions:.4g}%), "
            "above 1",
            "lower the fractions so they sum to at most 1 (100%)",
        )

    def amounts(self) -> dict[str, int]:
        """Samples per epoch that each source with an ``amount`` asks for, by source name."""
        return {
            src.name: src.parsed_amount.resolve(self.total)
            for _, _, src in self.sources()
            if src.parsed_amount is not None
        }

    def sources(self) -> list[tuple[str, Group, Source]]:
        """``(dotted field, group, source)`` for every source, in recipe order."""
        return [
            (f"groups[{g}].sources[{s}]", group, src)
            for g, group in enumerate(self.groups)
            for s, src in enumerate(group.sources)
        ]


_PART_RE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)((?:\[\d+\])*)$")


def apply_override(data: dict, assignment: str) -> None:
    """Apply ``a.b[0].c=value`` (value parsed as YAML); list items are addressed by index."""
    if "=" not in assignment:
        raise ConfigError(assignment, "an override must look like 'groups[0].sources[1].name=x'")
    path, raw = assignment.split("=", 1)
    path = path.strip()
    value = parse_yaml(raw, field=path) if raw != "" else ""
    steps: list[str | int] = []
    for part in path.split("."):
        m = _PART_RE.match(part)
        if not m:
            raise ConfigError(path, f"cannot address {part!r}", "e.g. groups[0].sources[1].name")
        steps.append(m.group(1))
        steps.extend(int(i) for i in re.findall(r"\[(\d+)\]", m.group(2)))
    node: dict | list = data
    for i, step in enumerate(steps[:-1]):
        here = path if i == len(steps) - 2 else str(step)
        if isinstance(step, int):
            if not isinstance(node, list) or step >= len(node):
                raise ConfigError(path, f"there is no item [{step}] here")
            node = node[step]
        else:
            if not isinstance(node, dict):
                raise ConfigError(path, f"{here!r} is not a group of fields")
            node = node.setdefault(step, {})
    last = steps[-1]
    if isinstance(last, int):
        if not isinstance(node, list) or last >= len(node):
            raise ConfigError(path, f"there is no item [{last}] here")
        node[last] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise ConfigError(path, "is not a field")


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read a recipe YAML, apply overrides, validate, and make source paths absolute (relative
    paths are relative to the recipe file's folder)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError("<file>", f"no recipe file at {p}")
    loaded = parse_yaml(p.read_text(), source=p)
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError("<file>", f"{p} must hold a mapping of fields at the top level")
    data = merge({}, loaded or {})
    for assignment in overrides or []:
        apply_override(data, assignment)
    recipe = from_dict(Recipe, data)
    base = p.resolve().parent
    for _, _, src in recipe.sources():
        src.path = str((base / Path(src.path).expanduser()).resolve())
    return recipe


def source_kind(src: Source) -> str:
    """``jsonl`` for a text file source, else ``shards`` (a shard set directory)."""
    return "jsonl" if src.modality == "text" and src.path.endswith(".jsonl") else "shards"


def count_jsonl(path: str | Path) -> int:
    """Samples in a JSONL source: its non-blank lines."""
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


#: what to do about a damaged source shard set
REBUILD = "rebuild the source shard set: rerun the job that wrote it with --restart"
#: a source declaring at most this many samples has every shard's samples counted by
#: :func:`check_recipe` (tar headers only, data passed by seeking); larger ones have their shard
#: sizes checked only, and damage that keeps a shard's size is met when it is read
COUNT_SAMPLES_UP_TO = 100_000


class DamagedShard(RuntimeError):
    """A source's shard is not what its ``dataset.json`` declares (truncated, empty, not a tar,
    fewer samples): the message names the shard's path and the fix."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        super().__init__(f"shard {path} {problem} (fix: {REBUILD})")


def count_tar_samples(path: str | Path) -> int:
    """Samples in one tar, grouped as webdataset groups them, reading headers only. Raises
    :class:`DamagedShard` when the file cannot be read as a tar."""
    n = 0

    def keep(_ordinal: int, _key: str) -> bool:
        nonlocal n
        n += 1
        return False

    try:
        for _ in tar_samples(str(path), keep):
            pass
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DamagedShard(path, f"cannot be read as a tar ({exc})") from None
    return n


def shard_damage(root: Path, entry: dict, count: bool) -> str | None:
    """What is wrong with one ``dataset.json`` shard entry's tar under ``root`` (a line
    naming its path and the fix), or None: its size against ``bytes``, and with ``count`` its
    samples against ``samples``. A missing shard is left to the caller."""
    path = root / entry["path"]
    size = path.stat().st_size
    declared = entry.get("bytes")
    if declared is not None and size != int(declared):
        what = "is empty" if size == 0 else f"is {size} bytes"
        cut = "truncated" if size < int(declared) else "longer than written"
        return str(
            DamagedShard(path, f"{what} but {root / DATASET_JSON} declares {declared} ({cut})")
        )
    if not count or entry.get("samples") is None:
        return None
    try:
        n = count_tar_samples(path)
    except DamagedShard as exc:
        return str(exc)
    if n != int(entry["samples"]):
        return str(
            DamagedShard(
                path, f"holds {n} samples but {root / DATASET_JSON} declares {entry['samples']}"
            )
        )
    return None


def _available(src: Source) -> tuple[int | None, list[str]]:
    """Samples the source holds, and problems found on the way (None: cannot be read)."""
    p = Path(src.path)
    if source_kind(src) == "jsonl":
        if not p.is_file():
            return None, [f"no JSONL file at {p}"]
        problems = []
        n = 0
        with open(p, "rb") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                n += 1
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as exc:
                    problems.append(f"{p}:{lineno} is not JSON ({exc.msg})")
                    break
                if not isinstance(rec, dict) or not isinstance(rec.get("conversations"), list):
                    problems.append(f"{p}:{lineno} has no 'conversations' list")
                    break
        return n, problems
    if not (p / DATASET_JSON).is_file():
        what = "directory without dataset.json" if p.is_dir() else "nothing"
        return None, [f"no shard set at {p} ({what} there)"]
    doc = json.loads((p / DATASET_JSON).read_text())
    problems = []
    if doc.get("modality") and doc["modality"] != src.modality:
        problems.append(f"modality is {src.modality} but {p / DATASET_JSON} says {doc['modality']}")
    shards = doc.get("shards", [])
    missing = [s["path"] for s in shards if not (p / s["path"]).is_file()]
    if missing:
        problems.append(f"{len(missing)} shard(s) in dataset.json are missing, e.g. {missing[0]}")
    total = sum(int(s["samples"]) for s in shards)
    count = total <= COUNT_SAMPLES_UP_TO
    damaged = [
        d
        for s in shards
        if s["path"] not in missing and (d := shard_damage(p, s, count)) is not None
    ]
    if damaged:  # the first by path, and how many more: one line per source
        more = f"; {len(damaged) - 1} more shard(s) damaged" if len(damaged) > 1 else ""
        problems.append(damaged[0] + more)
    if doc.get("samples") is not None and int(doc["samples"]) != total:
        problems.append(
            f"{p / DATASET_JSON} declares {doc['samples']} samples but its shard list adds up "
            f"to {total} (fix: {REBUILD})"
        )
    return total, problems


def check_recipe(recipe: Recipe, notes: list[str] | None = None) -> list[str]:
    """Problems only the file system can show, one line each, naming the source's field; empty
    when the recipe can be read as written.

    Pass a list as ``notes`` to also collect what is allowed but worth knowing: a source whose
    ``amount`` is above what it holds (it will be repeated, and by how much), and amounts that
    do not add up to ``total``."""
    out = []
    amounts = recipe.amounts()
    for where, _, src in recipe.sources():
        label = f"{where} ({src.name})"
        try:
            strat = src.parsed
        except ValueError as exc:
            out.append(f"{label}: {exc}")
            continue
        if strat.percent is not None and strat.percent > 100:
            out.append(f"{label}: {src.strategy} asks for more than 100 %")
        available, problems = _available(src)
        out.extend(f"{label}: {p}" for p in problems)
        if available is None:
            continue
        if available == 0:
            if src.name not in amounts or amounts[src.name] > 0:
                out.append(f"{label}: {src.path} holds no samples")
            continue
        if src.name in amounts:
            wanted = amounts[src.name]
            if wanted > available and notes is not None:
                passes, rest = divmod(wanted, available)
                notes.append(
                    f"{label}: amount {src.amount!r} is {wanted} samples but {src.path} holds "
                    f"{available}: oversampled {wanted / available:.2f}x ({passes} whole "
                    f"pass(es) + {rest} picked {strat.kind}), {wanted - available} repeats"
                )
            continue
        wanted = strat.amount(available)
        if wanted > available:
            out.append(
                f"{label}: {src.strategy} asks for {wanted} samples but {src.path} holds "
                f"{available}: {wanted - available} short"
            )
    if notes is not None and recipe.total is not None and len(amounts) == len(recipe.sources()):
        asked = sum(amounts.values())
        if asked != recipe.total:
            notes.append(
                f"total: the sources' amounts add up to {asked} samples per epoch, not "
                f"total {recipe.total} (fractions are rounded down; counts are absolute)"
            )
    return out
