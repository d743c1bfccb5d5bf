"""The runner: partitions through Ray Data stages into scored pieces that survive a crash.

Pass 1 (parallel, Ray Data): each pending partition is loaded, mapped through the stages
(functions as tasks, stages with ``setup()`` as actor pools) and written as parquet pieces under
``_work/scored/p{partition}/``. When every row of a partition has been written the driver drops
a ``done`` marker: finished partitions are never redone, unfinished ones are redone whole.

The final write (``finalize`` in the job) reads the pieces back in (partition, row) order, so the
result does not depend on how Ray split or scheduled the work: kill -9, rerun, same shard set.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.sources import Partition
from manifests.atomic import write_bytes, write_json, write_parquet

log = logging.getLogger(__name__)

Stage = Callable[[pa.Table], pa.Table]
TIME_PREFIX = "_t_"


@dataclass
class WorkDir:
    """``OUT/_work``: the plan, scored pieces and per-partition done markers."""

    root: Path

    def scored(self, partition: int) -> Path:
        return self.root / "scored" / f"p{partition:06d}"

    def done(self, partition: int) -> Path:
        return self.root / "done" / f"p{partition:06d}.json"

    def is_done(self, partition: int) -> bool:
        return self.done(partition).is_file()

    def rows(self, partition: int) -> int:
        return json.loads(self.done(partition).read_text())["rows"]

    def read_partition(self, partition: int, columns: list[str] | None = None) -> pa.Table | None:
        """All scored rows of a finished partition, in input order (None when it had none)."""
        pieces = sorted(self.scored(partition).glob("*.parquet"))
        if not pieces:
            if self.rows(partition) == 0:
                return None
            raise FileNotFoundError(f"partition {partition} is marked done but has no pieces")
        cols = None
        if columns is not None:  # columns a pass did not write are simply absent
            present = set(pq.read_schema(pieces[0]).names)
            cols = [c for c in dict.fromkeys(["row", *columns]) if c in present]
        t = pa.concat_tables(
            [pq.read_table(p, columns=cols) for p in pieces], promote_options="default"
        )
        return t.sort_by("row")

    def timings(self, partition: int) -> dict[str, float]:
        return json.loads(self.done(partition).read_text()).get("timings_s", {})


def prepare_plan(
    plan_path: Path,
    partitions: Callable[[], list[Partition]],
    config_hash: str,
) -> list[Partition]:
    """The partition plan of this output: made once, reused by every rerun.

    A rerun with another config would mix results of two jobs: refuse, naming the way out.
    """
    if plan_path.is_file():
        plan = json.loads(plan_path.read_text())
        if plan["config_hash"] != config_hash:
            raise RuntimeError(
                f"{plan_path.parent.parent} holds an unfinished run of a different config; "
                "rerun with the same config to finish it, or pass --restart to start over"
            )
        return [Partition.from_json(p) for p in plan["partitions"]]
    parts = partitions()
    write_json(plan_path, {"config_hash": config_hash, "partitions": [p.to_json() for p in parts]})
    return parts


class _Load:
    """Ray task: a partition descriptor in, its rows out; records how many rows to expect."""

    def __init__(self, load: Callable[[Partition], pa.Table], work: WorkDir):
        self.load, self.work = load, work

    def __call__(self, batch: pa.Table) -> pa.Table:
        tables = []
        for text in batch["part"].to_pylist():
            part = Partition.from_json(text)
            rows = self.load(part)
            write_bytes(self.work.scored(part.index) / "expected", str(rows.num_rows).encode())
            tables.append(rows)
        return pa.concat_tables(tables, promote_options="default")


class _Timed:
    """Runs a stage and adds its time per row as an internal column, summed per partition."""

    def __init__(self, stage: Stage):
        self.stage = stage
        self.column = TIME_PREFIX + getattr(stage, "name", getattr(stage, "__name__", "stage"))

    def __call__(self, batch: pa.Table) -> pa.Table:
        if batch.num_rows == 0:
            return batch
        t0 = time.perf_counter()
        out = self.stage(batch)
        per_row = (time.perf_counter() - t0) / max(1, out.num_rows)
        spent = pa.array([per_row] * out.num_rows, pa.float64())
        if self.column in out.column_names:  # stages sharing a name (a score and its filter)
            idx = out.schema.get_field_index(self.column)
            return out.set_column(idx, self.column, pc.add(out[self.column], spent))
        return out.append_column(self.column, spent)


class _ActorStage(_Timed):
    """Actor wrapper for model stages: ``setup()`` runs once per actor, never at import."""

    def __init__(self, stage: Stage):
        super().__init__(stage)
        stage.setup()


class _WritePieces:
    """Ray task: write a batch's rows as parquet pieces, one per partition present.

    ``drop`` names columns not to write again (a later pass leaves the image bytes to the
    first pass's pieces)."""

    def __init__(self, work: WorkDir, drop: Sequence[str] = ()):
        self.work, self.drop = work, tuple(drop)

    def __call__(self, batch: pa.Table) -> pa.Table:
        out: dict[str, list] = {"partition": [], "rows": [], "timings": []}
        for p in pc.unique(batch["partition"]).to_pylist():
            rows = batch.filter(pc.equal(batch["partition"], p))
            lo, hi = pc.min(rows["row"]).as_py(), pc.max(rows["row"]).as_py()
            timings = {
                c[len(TIME_PREFIX) :]: pc.sum(rows[c]).as_py() or 0.0
                for c in rows.column_names
                if c.startswith(TIME_PREFIX)
            }
            data = rows.drop_columns(
                [c for c in rows.column_names if c.startswith(TIME_PREFIX) or c in self.drop]
            )
            write_parquet(self.work.scored(p) / f"{lo:08d}-{hi:08d}.parquet", data)
            out["partition"].append(p)
            out["rows"].append(rows.num_rows)
            out["timings"].append(json.dumps(timings))
        return pa.table(out)


def _map_stage(ds, stage: Stage):
    if hasattr(stage, "setup"):
        return ds.map_batches(
            _ActorStage,
            fn_constructor_args=(stage,),
            batch_format="pyarrow",
            batch_size=getattr(stage, "batch_size", None),
            concurrency=getattr(stage, "concurrency", 1),
            num_gpus=getattr(stage, "num_gpus", 0),
            num_cpus=getattr(stage, "num_cpus", 1),
        )
    return ds.map_batches(_Timed(stage), batch_format="pyarrow", batch_size=None)


def check_resources(stages: Sequence[Stage]) -> None:
    """An actor pool that reserves every CPU can never start: the tasks feeding it keep taking
    a CPU, and Ray Data waits forever. Refuse such a plan before any work starts.

    (Several pools that together reserve every CPU do finish: Ray Data retires a pool once its
    input is exhausted, freeing its CPUs for the stages after it.)"""
    import ray

    total = ray.cluster_resources().get("CPU", 0)
    for s in stages:
        if not hasattr(s, "setup") or getattr(s, "num_gpus", 0):
            continue
        reserved = getattr(s, "num_cpus", 1) * getattr(s, "concurrency", 1)
        if reserved > total - 1:
            raise ValueError(
                f"model stage {getattr(s, 'name', '?')!r} reserves {reserved:g} of the "
                f"cluster's {total:g} CPUs (num_cpus x concurrency), leaving none for the tasks "
                "that read and write partitions; lower its concurrency or num_cpus, or give "
                "Ray more CPUs (ray.num_cpus)"
            )


def run_partitions(
    work: WorkDir,
    parts: Sequence[Partition],
    load: Callable[[Partition], pa.Table],
    stages: Sequence[Stage],
    progress: bool = True,
    drop_columns: Sequence[str] = (),
) -> None:
    """Run every partition without a done marker through ``stages``; mark each one done."""
    import ray.data
    from tqdm import tqdm

    check_resources(stages)
    pending = [p for p in parts if not work.is_done(p.index)]
    if len(pending) < len(parts):
        log.info(
            "%d of %d partitions already done; resuming", len(parts) - len(pending), len(parts)
        )
    if not pending:
        return
    for p in pending:  # pieces of a partition a crash interrupted are redone whole
        shutil.rmtree(work.scored(p.index), ignore_errors=True)
    ds = ray.data.from_items(
        [{"part": p.to_json()} for p in pending], override_num_blocks=len(pending)
    )
    ds = ds.map_batches(_Load(load, work), batch_format="pyarrow", batch_size=1)
    for stage in stages:
        ds = _map_stage(ds, stage)
    ds = ds.map_batches(_WritePieces(work, drop_columns), batch_format="pyarrow", batch_size=None)

    written: dict[int, int] = defaultdict(int)
    expected: dict[int, int] = {}  # rows per partition, as its loader counted them
    timings: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    desc = f"{work.root.name}: partitions"
    with tqdm(total=len(pending), desc=desc, unit="part", disable=not progress) as bar:
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            for p, n, t in zip(
                *(batch[c].to_pylist() for c in ("partition", "rows", "timings")), strict=True
            ):
                written[p] += n
                for k, v in json.loads(t).items():
                    timings[p][k] += v
                if p not in expected:
                    expected[p] = int((work.scored(p) / "expected").read_text())
                if written[p] == expected[p] and not work.is_done(p):
                    write_json(work.done(p), {"rows": expected[p], "timings_s": timings[p]})
                    bar.update(1)
    # a partition with no rows at all (an empty tar) never shows up in the stream
    for p in pending:
        exp = work.scored(p.index) / "expected"
        if not work.is_done(p.index) and exp.is_file() and int(exp.read_text()) == 0:
            write_json(work.done(p.index), {"rows": 0, "timings_s": {}})
    missing = [p.index for p in pending if not work.is_done(p.index)]
    if missing:
        raise RuntimeError(f"partitions {missing[:10]} did not complete; rerun to retry them")
