"""Reading a job's output folder for a report: the ledger, its JSON files, and the counts.

Only what a job leaves in its output folder is read (``dataset.json``, ``stats.json``,
``ledger/part-*.parquet``), so a report can be rebuilt at any time, on any machine, without Ray
or the job's code. No HTML and no matplotlib here, so the counts (:func:`summarize_ledger`, which
the CLI prints) can be had without either.

The ledger may hold millions of rows, so it is scanned in batches of :data:`BATCH_ROWS` and only
the columns each part needs are read.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from manifests.schema import DROPPED, ERROR, KEPT

#: Stage / reason shown for non-kept rows whose ledger entry names none (a pipeline bug).
UNKNOWN_STAGE = "(unknown)"
NO_REASON = "(none)"
#: Rows per scanned ledger batch: bounds memory whatever the ledger's size.
BATCH_ROWS = 65_536


def ledger_files(out_dir: str | Path) -> list[Path]:
    """The ledger's parts in name order, which is partition order: it fixes "first seen"."""
    return sorted((Path(out_dir) / "ledger").glob("part-*.parquet"))


def ledger_dataset(out_dir: str | Path) -> ds.Dataset | None:
    """The ledger as one dataset, or None when there is none.

    Parts may differ in their score columns (a stage added later, a resumed run); the schemas
    are unified from the parquet footers alone, so a part lacking a column reads it as null.
    """
    files = ledger_files(out_dir)
    if not files:
        return None
    schema = pa.unify_schemas([pq.read_schema(f) for f in files], promote_options="permissive")
    return ds.dataset([str(f) for f in files], schema=schema, format="parquet")


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


def summarize_ledger(out_dir: str | Path) -> dict[str, Any]:
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
    """
    out = Path(out_dir)
    dataset = ledger_dataset(out)
    counts: dict[tuple[str, str | None, str | None], int] = {}
    if dataset is not None:
        names = dataset.schema.names
        wanted = [c for c in ("status", "stage", "reason") if c in names]
        for batch in scan_batches(dataset, wanted):
            table = pa.Table.from_batches([batch])
            for col in ("status", "stage", "reason"):
                if col not in names:
                    table = table.append_column(col, pa.nulls(table.num_rows, pa.string()))
            # use_threads=False keeps groups in encounter order: that is "first seen"
            grouped = table.group_by(["status", "stage", "reason"], use_threads=False).aggregate(
                [([], "count_all")]
            )
            for row in grouped.to_pylist():
                key = (row["status"] or "(null)", row["stage"], row["reason"])
                counts[key] = counts.get(key, 0) + row["count_all"]

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
        "ledger_files": len(ledger_files(out)),
        "inputs": inputs,
        "by_status": by_status,
        "by_stage": by_stage,
        "reasons": reason_rows,
        "stages": stages,
        "funnel": funnel,
    }
