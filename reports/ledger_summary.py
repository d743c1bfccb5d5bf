"""Reading a job's output folder for a report: the ledger, its JSON files, and the counts.

Only what a job leaves in its output folder is read (``dataset.json``, ``stats.json``,
``ledger/part-*.parquet``), so a report can be rebuilt at any time, on any machine, without Ray
or the job's code. No HTML and no matplotlib here, so the counts (:func:`summarize_ledger`, which
the CLI prints) can be had without either.

The ledger may hold millions of rows. Counts, value ranges, histogram counts and where the
thumbnails are come from each part's footer (:func:`manifests.ledger.part_summary`, written by
the worker that wrote the part), added up as they are read (:func:`read_footers`), so the
driver's cost grows with the number of parts, not of rows; what needs rows (pictures, cluster
sizes) is scanned in batches of :data:`BATCH_ROWS`, only the columns and parts it needs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from manifests.grid_histogram import GridHistogram
from manifests.ledger import read_summary, without_summary
from manifests.schema import DROPPED, ERROR, KEPT

#: Stage / reason shown for non-kept rows whose ledger entry names none (a pipeline bug).
UNKNOWN_STAGE = "(unknown)"
NO_REASON = "(none)"
#: Rows per scanned ledger batch: bounds memory whatever the ledger's size.
BATCH_ROWS = 65_536


def ledger_files(out_dir: str | Path) -> list[Path]:
    """The ledger's parts in name order, which is partition order: it fixes "first seen"."""
    return sorted((Path(out_dir) / "ledger").glob("part-*.parquet"))


@dataclass(frozen=True)
class LedgerPart:
    """One ledger part as its footer describes it: its schema and how many of its rows not
    kept hold a thumbnail. Not the footer itself, nor its summary: parsed, a
    footer takes ~46 kB of memory (1,000 of them took 46.5 MB, a scratch script), and a
    ledger may have tens of thousands of parts."""

    path: Path
    schema: pa.Schema
    thumbs: int


@dataclass
class LedgerFooters:
    """Every part's footer summary (:func:`manifests.ledger.part_summary`), added up as the
    parts are read, so memory grows by one :class:`LedgerPart` a part, not by its summary."""

    parts: list[LedgerPart] = field(default_factory=list)
    #: rows by (status, stage, reason), in the order first seen
    counts: dict[tuple[str | None, str | None, str | None], int] = field(default_factory=dict)
    #: per numeric column: the smallest and largest finite value and how many there are
    ranges: dict[str, tuple[float, float, int]] = field(default_factory=dict)
    #: per plotted column: kept / not-kept counts on the shared grid, ``lin``, and ``log`` if
    #: every part had one (all its values positive)
    grids: dict[str, dict[str, GridHistogram]] = field(default_factory=dict)

    def add(self, part: LedgerPart, summary: dict[str, Any]) -> None:
        self.parts.append(part)
        for status, stage, reason, n in summary["counts"]:  # in the part's order
            key = (status, stage, reason)
            self.counts[key] = self.counts.get(key, 0) + n
        for col, (lo, hi, n) in summary["ranges"].items():
            if col in self.ranges:
                a, b, m = self.ranges[col]
                self.ranges[col] = (min(a, lo), max(b, hi), m + n)
            else:
                self.ranges[col] = (lo, hi, n)
        for col, grids in summary["grids"].items():
            have = self.grids.get(col)
            if have is None:
                self.grids[col] = dict(grids)
                continue
            have["lin"] += grids["lin"]
            if "log" in have and "log" in grids:
                have["log"] += grids["log"]
            else:  # a part with a value <= 0: no log form for the column, ever after
                have.pop("log", None)

    def with_thumbs(self) -> list[LedgerPart]:
        """The parts holding a thumbnail of a row that was not kept: the only ones a contact
        sheet of dropped rows needs to open."""
        return [p for p in self.parts if p.thumbs]


def read_footers(out_dir: str | Path) -> LedgerFooters:
    """Every part's footer, read once and added up (a part written before parts carried a
    summary is counted from its rows)."""
    footers = LedgerFooters()
    # parts of one job share their columns: one schema object for all of them (each takes
    # ~4.8 kB), not one per part
    schemas: dict[bytes, pa.Schema] = {}
    for f in ledger_files(out_dir):
        footer = pq.read_metadata(f)
        schema = footer.schema.to_arrow_schema()
        summary = read_summary(f, schema)
        schema = schema.with_metadata(without_summary(schema.metadata))
        schema = schemas.setdefault(schema.serialize().to_pybytes(), schema)
        thumbs = sum(summary["thumbs"].values())
        footers.add(LedgerPart(f, schema, thumbs), summary)
    return footers


def unified_schema(parts: Sequence[LedgerPart]) -> pa.Schema:
    """One schema for parts that may differ in their score columns (a stage added later, a
    resumed run): a column a part lacks reads as null there."""
    distinct = {id(p.schema): p.schema for p in parts}  # read_footers shares equal ones
    return pa.unify_schemas(list(distinct.values()), promote_options="permissive")


def ledger_dataset(
    out_dir: str | Path, parts: Sequence[LedgerPart] | None = None
) -> ds.Dataset | None:
    """The ledger (or the given ``parts`` of it) as one dataset, or None when there is none.

    Parts may differ in their score columns (a stage added later, a resumed run); the schemas
    are unified from the parquet footers alone, so a part lacking a column reads it as null.
    """
    parts = read_footers(out_dir).parts if parts is None else parts
    if not parts:
        return None
    return ds.dataset([str(p.path) for p in parts], schema=unified_schema(parts), format="parquet")


def read_json(path: Path, notes: list[str] | None = None) -> dict[str, Any] | None:
    """A JSON object from ``path``, or None (with a note saying why) if missing or unreadable.

    The report must still come out of a job that crashed before writing its metadata: that is
    exactly when someone wants to look at what happened.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if notes is not None:
            notes.append(f"{path.name} is missing.")
        return None
    except (OSError, ValueError) as exc:
        if notes is not None:
            notes.append(f"{path.name} could not be read ({exc}).")
        return None
    if not isinstance(data, dict):
        if notes is not None:
            notes.append(f"{path.name} does not hold a JSON object.")
        return None
    return data


def scan_batches(dataset: ds.Dataset, columns: list[str], **kw: Any) -> Iterator[pa.RecordBatch]:
    """The ledger's ``columns`` in bounded batches (``kw``: e.g. a ``filter`` expression)."""
    # one file and one batch read ahead, not Arrow's default 4 files x 16 batches: the report
    # runs in the driver, and its peak memory grew 15.4 MB from a 10k- to a 100k-row ledger
    # of 1,000-row parts with the default, 10.2 MB with this (VmHWM, a scratch script)
    yield from dataset.to_batches(
        columns=columns, batch_size=BATCH_ROWS, fragment_readahead=1, batch_readahead=1, **kw
    )


def summarize_ledger(out_dir: str | Path, footers: LedgerFooters | None = None) -> dict[str, Any]:
    """Count the ledger's rows by status and by (stage, reason), and derive the stage funnel.

    Returns a JSON-serialisable dict (the CLI prints it)::

        {"ledger_files": 3, "inputs": N,
         "by_status": {"kept": K, "dropped": D, "error": E, ...},
         "by_stage": {stage: {"dropped": d, "error": e}},
         "reasons": [{"stage", "reason", "status", "count"}, ...],   # count desc
         "stages": [...],   # stats.json's pipeline order, then ledger-only stages
         "funnel": [{"stage", "reached", "dropped", "error", "survived"}, ...]}

    Stage order comes from ``stats.json`` when it exists, because a stage that dropped nothing
    never shows up in the ledger yet belongs in the funnel; stages only the ledger names follow
    in the order they were first seen. Non-kept rows without a stage go to ``(unknown)``.
    The counts come from the parts' summaries (``footers``: already read, or read here).
    """
    out = Path(out_dir)
    footers = read_footers(out) if footers is None else footers
    counts: dict[tuple[str, str | None, str | None], int] = {}
    for (status, stage, reason), n in footers.counts.items():  # in the order first seen
        key = (status or "(null)", stage, reason)
        counts[key] = counts.get(key, 0) + n

    by_status: dict[str, int] = {KEPT: 0, DROPPED: 0, ERROR: 0}
    by_stage: dict[str, dict[str, int]] = {}
    reasons: dict[tuple[str, str, str], int] = {}
    for (status, stage, reason), n in counts.items():
        by_status[status] = by_status.get(status, 0) + n
        if status == KEPT:
            continue  # a kept row's stage/reason mean nothing
        stage_name = stage or UNKNOWN_STAGE
        slot = by_stage.setdefault(stage_name, {DROPPED: 0, ERROR: 0})
        slot[status] = slot.get(status, 0) + n
        rkey = (stage_name, reason or NO_REASON, status)
        reasons[rkey] = reasons.get(rkey, 0) + n
    inputs = sum(by_status.values())

    stats = read_json(out / "stats.json") or {}
    declared = [str(s) for s in stats.get("stages") or [] if s is not None]
    stages = list(dict.fromkeys(declared))
    extra = [s for s in by_stage if s not in stages]
    # "(unknown)" is a bookkeeping hole, not a stage: show it last
    stages += [s for s in extra if s != UNKNOWN_STAGE] + [s for s in extra if s == UNKNOWN_STAGE]

    funnel = []
    reached = inputs
    for stage in stages:
        slot = by_stage.get(stage, {})
        removed = sum(slot.values())
        survived = reached - removed
        funnel.append(
            {
                "stage": stage,
                "reached": reached,
                "dropped": slot.get(DROPPED, 0),
                "error": slot.get(ERROR, 0),
                "survived": survived,
            }
        )
        reached = survived

    reason_rows = [
        {"stage": s, "reason": r, "status": st, "count": n} for (s, r, st), n in reasons.items()
    ]
    reason_rows.sort(key=lambda r: (-r["count"], r["stage"], r["reason"], r["status"]))
    return {
        "ledger_files": len(footers.parts),
        "inputs": inputs,
        "by_status": by_status,
        "by_stage": by_stage,
        "reasons": reason_rows,
        "stages": stages,
        "funnel": funnel,
    }
