"""The runner: partitions through stages, each partition's output written where it was made.

Two ways through a pass, chosen by its stages:

* **Partition tasks** (every stage a plain CPU function): each pending partition is one Ray
  task, a bounded window of them in flight and the driver blocked in ``ray.wait`` between
  completions (its CPU time does not grow with the run). The task loads the partition, streams
  it through the stages in chunks (the leading I/O stages, such as downloads, run one chunk
  ahead in a thread, so fetching overlaps decoding) and hands the chunks to the pass's *sink*,
  which writes the partition's files (its shards and ledger part, or its scored pieces). The
  task writes the partition's done marker last, carrying the sink's metadata. A job with no
  model stage on one machine runs the same tasks on a pool of local processes instead of
  starting Ray (``engine.local_pool``; ``ray.executor``).
* **Actor pools** (a stage with ``setup()``: a model): Ray Data maps the stages over blocks
  (functions as tasks, models as actor pools that load once), which splits partitions across
  batches; rows come back as parquet pieces ``_work/{pass}/scored/p{partition}/`` and the driver
  marks a partition done when all its rows are written. A later pass (``run_partitions`` with a
  sink) then writes each partition's shards from its own pieces, in parallel.

The driver's loop only ever sees per-partition metadata (rows, timings, shard names, counts):
never a sample's bytes. (With ``ray.work_while_starting``, while an embedded Ray is still
starting, the driver process runs whole partitions itself, one at a time, as a worker would.)
Finished partitions are never redone; a partition a crash interrupted is redone whole (its sink
first removes what it had left), so kill -9 and rerun give the same files.
"""

from __future__ import annotations

import errno
import json
import logging
import shutil
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from functools import partial
from typing import Protocol

import pyarrow as pa
import pyarrow.compute as pc

from engine import local_pool, ray_start
from engine.partitions import Partition
from engine.progress import Progress
from engine.workdir import WorkDir
from engine.worker_memory import ray_task_options, stage_memory
from manifests.atomic import json_text, write_bytes, write_json, write_parquet

log = logging.getLogger(__name__)

Stage = Callable[[pa.Table], pa.Table]
Loader = Callable[[Partition], pa.Table]
TIME_PREFIX = "_t_"
#: rows per chunk inside a partition task: small enough that a chunk's downloads overlap the
#: previous chunk's decoding, large enough that per-chunk overhead stays negligible
CHUNK_ROWS = 64


class Sink(Protocol):
    """Where a partition's rows go. ``write`` receives the partition's chunks in row order,
    removes whatever an interrupted earlier attempt left, and returns the metadata that the
    partition's done marker records (JSON-able, small: never sample bytes)."""

    def write(self, part: Partition, chunks: Iterator[pa.Table]) -> dict: ...


def stage_name(stage: Stage) -> str:
    return getattr(stage, "name", getattr(stage, "__name__", "stage"))


def is_model_stage(stage: Stage) -> bool:
    return hasattr(stage, "setup")


class PieceSink:
    """Scored pieces for a later pass or global step: ``scored/p{partition}/*.parquet``.

    ``drop`` names columns not to write again (a later pass leaves the image bytes to the first
    pass's pieces)."""

    def __init__(self, work: WorkDir, drop: Sequence[str] = ()):
        self.work, self.drop = work, tuple(drop)

    def write(self, part: Partition, chunks: Iterator[pa.Table]) -> dict:
        shutil.rmtree(self.work.scored(part.index), ignore_errors=True)
        for chunk in chunks:
            self.write_rows(part.index, chunk)
        return {}

    def write_rows(self, partition: int, rows: pa.Table) -> None:
        if rows.num_rows == 0:
            return
        lo, hi = pc.min(rows["row"]).as_py(), pc.max(rows["row"]).as_py()
        data = rows.drop_columns(
            [c for c in rows.column_names if c.startswith(TIME_PREFIX) or c in self.drop]
        )
        write_parquet(self.work.scored(partition) / f"{lo:08d}-{hi:08d}.parquet", data)


def chunks_of(table: pa.Table, rows: int = CHUNK_ROWS) -> Iterator[pa.Table]:
    """Zero-copy slices of ``table``."""
    for start in range(0, table.num_rows, rows):
        yield table.slice(start, rows)


class PartitionTask:
    """One partition, start to finish, in one Ray task: load, stages chunk by chunk, sink, done.

    Leading stages marked ``io_bound`` (downloads) run in a helper thread one chunk ahead of the
    rest, so a task keeps its network busy while its CPU decodes."""

    def __init__(
        self,
        work: WorkDir,
        load: Loader,
        stages: Sequence[Stage],
        sink: Sink,
        chunk_rows: int = CHUNK_ROWS,
    ):
        self.work, self.load, self.sink, self.chunk_rows = work, load, sink, chunk_rows
        n_io = 0
        while n_io < len(stages) and getattr(stages[n_io], "io_bound", False):
            n_io += 1
        self.io_stages, self.cpu_stages = list(stages[:n_io]), list(stages[n_io:])

    def run(self, part: Partition) -> dict:
        timings: dict[str, float] = defaultdict(float)
        t0 = time.perf_counter()
        table = self.load(part)
        timings["load"] += time.perf_counter() - t0
        meta = self.sink.write(part, self._chunks(table, timings))
        meta = {**meta, "rows": table.num_rows, "timings_s": dict(timings), "node": _node_id()}
        text = json_text(meta)
        write_bytes(self.work.done(part.index), text.encode())  # last: the partition is complete
        return json.loads(text)  # as its marker holds it: the driver need not read it back

    def _chunks(self, table: pa.Table, timings: dict[str, float]) -> Iterator[pa.Table]:
        if not self.io_stages:
            for chunk in chunks_of(table, self.chunk_rows):
                yield _apply(self.cpu_stages, chunk, timings)
            return
        ahead: Future | None = None  # one chunk fetching ahead of the one being decoded
        for chunk in chunks_of(table, self.chunk_rows):
            fetched = ahead.result() if ahead is not None else None
            ahead = _in_thread(_apply, self.io_stages, chunk, timings)
            if fetched is not None:
                yield _apply(self.cpu_stages, fetched, timings)
        if ahead is not None:
            yield _apply(self.cpu_stages, ahead.result(), timings)


def _result(fut: Future, poll_s: float = 0.25):
    """``fut``'s result, waited for in slices: a Ctrl-C that the kernel hands to another of
    the driver's threads (Ray's own, once it is up) only reaches the main thread when it
    wakes, and a wait without a timeout would not wake until a stalled download gives up."""
    while True:
        try:
            return fut.result(timeout=poll_s)
        except TimeoutError:
            continue


def _in_thread(fn: Callable, *args: object) -> Future:
    """``fn(*args)`` in a daemon thread of its own. Not a thread pool: its threads are joined
    when the interpreter exits, so a driver interrupted (Ctrl-C) while a download stalls would
    wait for the download's deadline before it could exit."""
    fut: Future = Future()

    def run() -> None:
        try:
            fut.set_result(fn(*args))
        except BaseException as exc:
            fut.set_exception(exc)

    threading.Thread(target=run, name="io-stages", daemon=True).start()
    return fut


def _node_id() -> str | None:
    """The Ray node this partition ran on (recorded in its done marker)."""
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None


def _apply(stages: Sequence[Stage], chunk: pa.Table, timings: dict[str, float]) -> pa.Table:
    for stage in stages:
        if chunk.num_rows == 0:
            break
        t0 = time.perf_counter()
        chunk = stage(chunk)
        timings[stage_name(stage)] += time.perf_counter() - t0
    return chunk


class _Load:
    """Ray task (actor-pool passes): a partition descriptor in, its rows out; records how many
    rows to expect, so the driver knows when a partition is complete."""

    def __init__(self, load: Loader, work: WorkDir):
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
        self.column = TIME_PREFIX + stage_name(stage)

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
    """Ray task: a batch's rows as parquet pieces, one per partition present."""

    def __init__(self, sink: PieceSink):
        self.sink = sink

    def __call__(self, batch: pa.Table) -> pa.Table:
        out: dict[str, list] = {"partition": [], "rows": [], "timings": []}
        for p in pc.unique(batch["partition"]).to_pylist():
            rows = batch.filter(pc.equal(batch["partition"], p))
            timings = {
                c[len(TIME_PREFIX) :]: pc.sum(rows[c]).as_py() or 0.0
                for c in rows.column_names
                if c.startswith(TIME_PREFIX)
            }
            self.sink.write_rows(p, rows)
            out["partition"].append(p)
            out["rows"].append(rows.num_rows)
            out["timings"].append(json.dumps(timings))
        return pa.table(out)


def _map_stage(ds, stage: Stage):
    if is_model_stage(stage):
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
    models = [s for s in stages if is_model_stage(s) and not getattr(s, "num_gpus", 0)]
    if not models:
        return
    ray_start.wait_for_ray()
    import ray

    total = ray.cluster_resources().get("CPU", 0)
    for s in models:
        reserved = getattr(s, "num_cpus", 1) * getattr(s, "concurrency", 1)
        if reserved > total - 1:
            raise ValueError(
                f"model stage {stage_name(s)!r} reserves {reserved:g} of the "
                f"cluster's {total:g} CPUs (num_cpus x concurrency), leaving none for the tasks "
                "that read and write partitions; lower its concurrency or num_cpus, or give "
                "Ray more CPUs (ray.num_cpus)"
            )


def run_partitions(
    work: WorkDir,
    parts: Sequence[Partition],
    load: Loader,
    stages: Sequence[Stage] = (),
    *,
    sink: Sink | None = None,
    progress: bool = True,
    drop_columns: Sequence[str] = (),
    unit: str = "inputs",
    chunk_rows: int = CHUNK_ROWS,
) -> dict[int, dict]:
    """Run every partition without a done marker through ``stages`` into ``sink`` (default:
    scored pieces in ``work``); returns every partition's done-marker metadata, in plan order.

    A pass with a model stage can only write pieces: its rows are spread over actor batches.
    ``chunk_rows``: rows per chunk inside a partition task (1 for videos: a video's frames are
    written before the next video is decoded)."""
    sink = sink if sink is not None else PieceSink(work, drop_columns)
    models = [s for s in stages if is_model_stage(s)]
    if models and local_pool.current() is not None:
        raise RuntimeError(
            f"a pass with model stages ({', '.join(map(stage_name, models))}) needs Ray, but "
            "this job runs on local processes: its needs_ray() said it had no model stage"
        )
    if models and not isinstance(sink, PieceSink):
        raise ValueError(
            f"a pass with model stages ({', '.join(map(stage_name, models))}) writes scored "
            "pieces; write shards in a following pass"
        )
    check_resources(stages)
    # a fresh pass has no markers to look for (one stat, not one a partition)
    begun = (work.root / "done").is_dir()
    pending = [p for p in parts if not work.is_done(p.index)] if begun else list(parts)
    if len(pending) < len(parts):
        log.info(
            "%s: %d of %d partitions already done; resuming",
            work.root.name,
            len(parts) - len(pending),
            len(parts),
        )
    log.debug(
        "%s: %d of %d partitions to run, stages [%s], %s, chunks of %d rows",
        work.root.name,
        len(pending),
        len(parts),
        ", ".join(map(stage_name, stages)),
        "actor pools for " + ", ".join(map(stage_name, models)) if models else "plain tasks",
        chunk_rows,
    )
    metas: dict[int, dict] = {}  # what the tasks returned: their markers' content
    if pending:
        sizes = [p.inputs() for p in pending]
        total = None if None in sizes else sum(sizes)
        bar = Progress(
            work.root.name, len(pending), unit=unit, enabled=progress, total_inputs=total
        )
        with bar:
            phases: dict[str, dict] = {}
            if models:
                ray_start.wait_for_ray()
                import ray.data  # only here: its import costs the driver about a second

                from engine.ray_session import quiet_ray_data

                quiet_ray_data(not log.isEnabledFor(logging.DEBUG))
                ds = ray.data.from_items(
                    [{"part": p.to_json()} for p in pending], override_num_blocks=len(pending)
                )
                _run_actor_pass(ds, work, pending, load, stages, sink, bar)
            else:
                task = PartitionTask(work, load, stages, sink, chunk_rows)
                phases = _run_partition_tasks(task, pending, bar, metas)
        work.record_pass(bar.done, bar.rows, bar.elapsed, phases)
        missing = [p.index for p in pending if p.index not in metas and not work.is_done(p.index)]
        if missing:
            raise RuntimeError(f"partitions {missing[:10]} did not complete; rerun to retry them")
    return {p.index: metas.get(p.index) or work.meta(p.index) for p in parts}


#: errors of the machine, not of one partition: every other partition will meet them too
MACHINE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})


def task_cause(exc: BaseException) -> BaseException:
    """The worker's own exception inside a Ray task error (whose text is the whole remote
    traceback); ``exc`` itself for anything else."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


def one_line(exc: BaseException) -> str:
    """``Type: first line of the message``, at most 200 characters."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200] if text else ''}"


def _run_partition_tasks(
    task: PartitionTask, pending: Sequence[Partition], bar: Progress, metas: dict[int, dict]
) -> dict[str, dict]:
    """One Ray task per partition, at most two per CPU in flight (so no worker waits for the
    driver). A partition whose task raised is reported after the others finished; Ray itself
    retries a task whose worker or node died. While an embedded Ray is still starting, the
    driver runs the first partitions itself (``engine.ray_start``). Returns what each phase
    did: ``{"driver": ..., "ray": ...}``, each ``{partitions, rows, seconds}``. Each finished
    partition's metadata goes in ``metas``."""
    queue = list(reversed(pending))
    failed: list[tuple[int, BaseException]] = []
    phases: dict[str, dict] = {}
    if ray_start.driver_may_work():
        mark = _Mark(bar)
        _run_here_while_ray_starts(task, queue, bar, failed, metas)
        phases["driver"] = mark.since()
    pool = local_pool.current()
    if queue and pool is not None:
        pool.wait_ready()
        mark = _Mark(bar)  # from the workers up, as from Ray up below
        _run_on_pool(pool, task, queue, bar, failed, metas)
        phases["processes"] = mark.since()
    elif queue:
        ray_start.wait_for_ray()
        mark = _Mark(bar)  # from Ray up: a fresh start's workers still import the stages
        _run_on_ray(task, queue, bar, failed, metas)
        phases["ray"] = mark.since()
    if failed:
        first = failed[0][1]
        if isinstance(first, OSError) and first.errno in MACHINE_ERRNOS:
            raise first  # disk full, read-only...: the machine's problem, said as it is
        listed = "; ".join(f"{i}: {one_line(c)}" for i, c in failed[:3])
        raise RuntimeError(f"{len(failed)} partition(s) failed ({listed}); rerun to retry them")
    return phases


def _failed(
    failed: list[tuple[int, BaseException]],
    part: Partition,
    exc: BaseException,
    cause: BaseException | None = None,
) -> None:
    """A partition that raised, said in one line (its whole traceback, a Ray task's remote one
    included, at DEBUG) and kept for the pass's error; ``cause``: the worker's own exception
    inside a Ray task error."""
    cause = cause or exc
    log.debug("partition %d failed", part.index, exc_info=exc)
    log.error("partition %d failed: %s", part.index, one_line(cause))
    failed.append((part.index, cause))


class _Mark:
    """Where a pass's progress stood at a moment, to say what was done since."""

    def __init__(self, bar: Progress):
        self.bar, self.t, self.done, self.rows = bar, time.perf_counter(), bar.done, bar.rows

    def since(self) -> dict:
        return {
            "partitions": self.bar.done - self.done,
            "rows": self.bar.rows - self.rows,
            "seconds": round(time.perf_counter() - self.t, 3),
        }


def _run_here_while_ray_starts(
    task: PartitionTask,
    queue: list[Partition],
    bar: Progress,
    failed: list[tuple[int, BaseException]],
    metas: dict[int, dict],
) -> None:
    """Partitions in this process, one at a time, until Ray is up: the CPUs would otherwise
    idle through its start-up. The driver runs a copy of ``task`` made as the workers get
    theirs (pickled), so whatever state the stages build here never travels to them."""
    from ray import cloudpickle  # what Ray pickles tasks with (its import may still be under
    # way in the starting thread: this waits for it, a fraction of a second)

    blob = cloudpickle.dumps(task)
    start = ray_start.current()
    if start is not None:
        start.when_up(partial(_warm_workers, task))
    here = None
    while queue and ray_start.driver_may_work():
        here = here or cloudpickle.loads(blob)
        part = queue.pop()
        try:
            meta = _result(_in_thread(here.run, part))
        except Exception as exc:  # the others go on; a rerun retries this one
            _failed(failed, part, exc)
            continue
        metas[part.index] = meta
        bar.partition_done(meta["rows"])
    if here is not None:
        log.debug("%d partitions ran in the driver while Ray started", bar.done + len(failed))


def _warm_workers(task: PartitionTask) -> None:
    """The moment Ray is up (called by the starting thread), one task per CPU that only
    unpickles ``task``: the fresh workers import the stages' modules (about half a second)
    while the driver finishes its last partition, not after it. Nothing waits for them."""
    import ray

    warm = ray.remote(num_cpus=1)(_import_only)
    shared = ray.put(task)
    for _ in range(int(ray.cluster_resources().get("CPU", 1))):
        warm.remote(shared)


def _import_only(task: PartitionTask) -> None:
    """Nothing: receiving ``task`` made this worker import what the pass's stages need."""


def _run_on_ray(
    task: PartitionTask,
    queue: list[Partition],
    bar: Progress,
    failed: list[tuple[int, BaseException]],
    metas: dict[int, dict],
) -> None:
    import ray

    # a task whose stages load a model asks for its memory: no node runs more than fit
    opts = ray_task_options(stage_memory([*task.io_stages, *task.cpu_stages]), ray.nodes())
    run = ray.remote(**opts)(_run_task)
    shared = ray.put(task)  # pickled once, not once per partition
    window = max(2, int(2 * ray.cluster_resources().get("CPU", 1)))
    running: dict = {}
    while queue or running:
        while queue and len(running) < window:
            part = queue.pop()
            running[run.remote(shared, part.to_json())] = part
        done, _ = ray.wait(list(running), num_returns=1)
        part = running.pop(done[0])
        try:
            meta = ray.get(done[0])
        except Exception as exc:  # the others go on; a rerun retries this one
            _failed(failed, part, exc, task_cause(exc))
            continue
        metas[part.index] = meta
        bar.partition_done(meta["rows"])


def _run_on_pool(
    pool: local_pool.LocalPool,
    task: PartitionTask,
    queue: list[Partition],
    bar: Progress,
    failed: list[tuple[int, BaseException]],
    metas: dict[int, dict],
) -> None:
    """The Ray loop's twin on local processes (``engine.local_pool``): the same task, the same
    handling of a failed one; a worker gets its next partition as it answers."""

    def finished(part: Partition, fut: Future) -> None:
        try:
            meta = fut.result()
        except Exception as exc:  # the others go on; a rerun retries this one
            _failed(failed, part, exc)
            return
        metas[part.index] = meta
        bar.partition_done(meta["rows"])

    local_pool.run_all(pool, task.run, queue, finished)


def _run_task(task: PartitionTask, part_json: str) -> dict:
    return task.run(Partition.from_json(part_json))


def _run_actor_pass(
    ds,
    work: WorkDir,
    pending: Sequence[Partition],
    load: Loader,
    stages: Sequence[Stage],
    sink: PieceSink,
    bar: Progress,
) -> None:
    for p in pending:  # pieces of a partition a crash interrupted are redone whole
        shutil.rmtree(work.scored(p.index), ignore_errors=True)
    ds = ds.map_batches(_Load(load, work), batch_format="pyarrow", batch_size=1)
    for stage in stages:
        ds = _map_stage(ds, stage)
    ds = ds.map_batches(_WritePieces(sink), batch_format="pyarrow", batch_size=None)

    written: dict[int, int] = defaultdict(int)
    expected: dict[int, int] = {}  # rows per partition, as its loader counted them
    timings: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
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
                bar.partition_done(expected[p])
    # a partition with no rows at all (an empty tar) never shows up in the stream
    for p in pending:
        exp = work.scored(p.index) / "expected"
        if not work.is_done(p.index) and exp.is_file() and int(exp.read_text()) == 0:
            write_json(work.done(p.index), {"rows": 0, "timings_s": {}})
            bar.partition_done(0)
