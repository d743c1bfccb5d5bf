"""The job protocol and the one skeleton every job runs through.

A job (curate, recaption, video) says what it is: its config class, the shard sets it writes,
the hash of what decides its output, how its input splits into partitions, and how to run its
passes. ``run_job`` does the rest the same way for all of them: check the config before any
work, restart or refuse a foreign output, return at once when the output is complete, make (or
reuse) the partition plan, bring Ray up (timed apart) and down, clean up the work dir.

Where the passes run (``choose_executor``): Ray when the job has a model stage (Ray Data actor
pools), a cluster address is given or Ray is already up in this process; otherwise a pool of
local processes (``engine.local_pool``), which spares a small job Ray's 4-5 s of start and stop.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from engine import local_pool, ray_start
from engine.partitions import Partition, prepare_plan
from engine.progress import status as show_status
from engine.ray_start import RayStart
from engine.worker_memory import workers_that_fit
from manifests.configs import ConfigError
from manifests.dataset import DATASET_JSON, read_dataset_json

log = logging.getLogger(__name__)

#: what a job writes into each of its shard-set folders (removed by --restart)
OUTPUT_ENTRIES = (
    DATASET_JSON,
    "shards",
    "ledger",
    "embeddings",
    "clusters",
    "stats.json",
    "report.html",
)
WORK = "_work"
LOCK = ".vl3data.lock"


@dataclass
class JobRun:
    """What a job's ``run`` gets: its config, where to work, the plan, and the clock."""

    cfg: Any
    out: Path
    work_root: Path
    parts: list[Partition]
    progress: bool
    started: float  # time.time() when the job started, for wall_s
    ray_joined_s: float = 0.0  # a Ray this run joined or found up: how long that took
    ray_start: RayStart | None = None  # an embedded Ray coming up in the background

    pool: local_pool.LocalPool | None = None  # local worker processes instead of Ray
    job: str = ""  # the job's name (stats.json: job, so `vl3data report` knows whose page)

    @property
    def ray_start_s(self) -> float:
        """The workers' start-up as the work saw it (``stats.json: ray_start_s``, so ``wall_s``
        minus it is the job without it): all of it for a Ray joined before the work, only what
        the work waited for when an embedded Ray starts in the background while the driver plans
        (the start's own length is logged: "Ray up in ... s") or local workers start."""
        if self.pool is not None:
            return self.pool.waited_s
        return self.ray_joined_s if self.ray_start is None else self.ray_start.waited_s


class Job(Protocol):
    """A job: its config class, inputs, outputs, hash, partitions, its passes, what it measures.

    The CLI and the build graph walk one explicit list of jobs (``vl3data.jobs.DATA_JOBS``) and
    know nothing else about them."""

    name: str  # the command, and the build node's kind
    help: str  # one line for ``vl3data --help``
    unit: str  # what its inputs are: images, videos
    config_class: type

    def inputs(self, cfg: Any) -> dict[str, tuple[str, str]]:
        """Local files and folders it reads: label -> (config field, path). A build
        fingerprints their contents instead of hashing the paths."""
        ...

    def outputs(self, cfg: Any) -> dict[str, Path]:
        """The shard sets it writes: name -> folder (complete once dataset.json is there)."""
        ...

    def config_hash(self, cfg: Any, blank: tuple[str, ...] = ()) -> str:
        """What decides the output (where and how fast it runs does not); ``blank``: fields
        left out (inputs a build fingerprints by content)."""
        ...

    def measure(self, cfg: Any) -> dict:
        """What its finished output measured: ``{unit, inputs, outputs, wall_s, ...}``."""
        ...

    def count_inputs(self, cfg: Any) -> int | None:
        """How many inputs a run would read, counted without reading them (a build's plan);
        None when they are not there yet."""
        ...

    def partitions(self, cfg: Any) -> list[Partition]: ...

    def needs_ray(self, cfg: Any) -> bool:
        """Whether a run has a pass with a model stage (Ray Data actor pools), so needs Ray
        even on one machine; a job without one can run on local processes."""
        ...

    def run(self, run: JobRun) -> dict[str, dict]:
        """The passes, global steps and the write; returns each output's dataset.json."""
        ...

    # Optional: ``worker_memory(cfg) -> engine.worker_memory.WorkerMemory | None``, what one
    # local worker process holds when its tasks load a model. The local pool then starts only
    # as many workers as fit (:func:`local_workers`).

    def report(self, out_dir: Path) -> None:
        """(Re)write one output's report.html from its files."""
        ...


def local_path(value: str | None) -> str | None:
    """A model or file named by a local path (not a hub name) as an absolute path; open_clip's
    ``local-dir:`` prefix is a local path too. None when it names nothing on this machine."""
    if not value:
        return None
    path = Path(value.removeprefix("local-dir:")).expanduser()
    return str(path.resolve()) if path.exists() else None


def read_stats(folder: Path) -> dict:
    return json.loads((Path(folder) / "stats.json").read_text())


def _clear(outputs: dict[str, Path], work_root: Path) -> None:
    for folder in outputs.values():
        for entry in OUTPUT_ENTRIES:
            p = folder / entry
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    shutil.rmtree(work_root, ignore_errors=True)


def complete_outputs(job: Job, cfg: Any, chash: str) -> dict[str, dict] | None:
    """Every output's dataset.json when all are there from this config; None when the job has
    work left; an error when a finished output came from another config."""
    outputs = job.outputs(cfg)
    if not all((d / DATASET_JSON).is_file() for d in outputs.values()):
        return None
    docs = {name: read_dataset_json(d) for name, d in outputs.items()}
    if all(doc.get("config_hash") == chash for doc in docs.values()):
        for d in outputs.values():
            if not (d / "report.html").is_file():  # a crash between dataset.json and report
                job.report(d)
        return docs
    raise RuntimeError(
        f"{cfg.output} already holds shard sets built with another config; "
        "choose a new output or pass --restart to rebuild them"
    )


def check_apart(job: Job, cfg: Any) -> None:
    """The output may not be an input, hold one, or lie inside one: a restart would delete
    input files, and a folder pool would ingest the output on its next run."""
    out = Path(cfg.output).expanduser().resolve()
    for label, (dotted, path) in job.inputs(cfg).items():
        if not path:
            continue
        inp = Path(path).expanduser().resolve()
        if out == inp or out.is_relative_to(inp) or inp.is_relative_to(out):
            where = "is" if out == inp else "lies inside" if out.is_relative_to(inp) else "holds"
            raise ConfigError(
                "output",
                f"{out} {where} the {label} input ({dotted}: {inp})",
                "write the output to a folder of its own, outside every input",
            )


@contextlib.contextmanager
def output_lock(out: Path, wait_s: float = 0.0) -> Iterator[None]:
    """One run at a time on an output: a second one waits up to ``wait_s`` for the holder, then
    refuses, naming it. The lock (``flock``) dies with its process, so a killed run never leaves
    it behind; the wait covers a holder that is already dying (a build's Ray worker outlives its
    killed driver by a few seconds)."""
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _take(fd, out, wait_s)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
        (out / LOCK).unlink(missing_ok=True)  # still held: nobody else can be writing
    finally:
        os.close(fd)  # releases the lock


def _take(fd: int, out: Path, wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    told = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
        if time.monotonic() >= deadline:
            raise RuntimeError(
                f"{out} is being written by another run (pid {holder}); wait for it to finish, "
                "or stop it, then rerun"
            ) from None
        if not told:
            log.warning("%s is held by pid %s; waiting up to %.0f s for it", out, holder, wait_s)
            told = True
        time.sleep(0.2)


def run_job(
    job: Job, cfg: Any, *, restart: bool = False, progress: bool = True, lock_wait_s: float = 0.0
) -> dict:
    """Run (or finish) ``job``; returns ``{output: dataset.json}``. ``lock_wait_s``: how long to
    wait for another run's lock on the output before refusing."""
    cfg.check_runnable()
    check_apart(job, cfg)
    executor = choose_executor(job, cfg)
    out = Path(cfg.output)
    if not restart and (docs := _complete_or_none(job, cfg)) is not None:
        return docs  # reading a finished output needs no lock
    # before --restart clears anything: a run that cannot fit its workers refuses here
    workers = local_workers(job, cfg) if executor == "processes" else 0
    with output_lock(out, lock_wait_s):
        return _run_locked(job, cfg, out, restart, progress, executor, workers)


def choose_executor(job: Job, cfg: Any) -> str:
    """``"ray"`` or ``"processes"`` (``ray.executor``; ``auto``: processes unless the job has a
    model stage, a cluster is named (``ray.address``, ``RAY_ADDRESS``) or this process already
    runs Ray, e.g. a build's). Refuses, before any work, processes for a job that needs Ray."""
    r = cfg.ray
    if r.executor == "ray":
        return "ray"
    needs = job.needs_ray(cfg)
    if r.executor == "processes":
        if needs:
            raise ConfigError(
                "ray.executor",
                f"'processes' cannot run this {job.name} job: it has a model stage, which runs "
                "in Ray Data actor pools",
                "set ray.executor: auto (or ray)",
            )
        return "processes"
    if needs or r.address or os.environ.get("RAY_ADDRESS") or ray_start.up_here():
        return "ray"
    return "processes"


def local_workers(job: Job, cfg: Any) -> int:
    """Local worker processes for a run: one per CPU (``ray.num_cpus``), or, where each loads
    its own copy of a model (``job.worker_memory``), as many as fit in ``ray.memory_gb``
    (default: the memory available now), at least one (``engine.worker_memory``)."""
    n = cfg.ray.num_cpus or local_pool.cpu_count()
    need = getattr(job, "worker_memory", lambda _cfg: None)(cfg)
    return workers_that_fit(n, need, cfg.ray.memory_gb, job.name)


def _complete_or_none(job: Job, cfg: Any) -> dict | None:
    docs = complete_outputs(job, cfg, job.config_hash(cfg))
    if docs is not None:
        log.info("%s is already complete (same config); nothing to do", cfg.output)
    return docs


def _run_locked(
    job: Job, cfg: Any, out: Path, restart: bool, progress: bool, executor: str, workers: int
) -> dict:
    from engine.ray_session import init_ray

    work_root = out / WORK
    chash = job.config_hash(cfg)
    if restart:
        _clear(job.outputs(cfg), work_root)
    if (docs := _complete_or_none(job, cfg)) is not None:  # finished while we waited
        return docs
    started = time.time()
    # the workers start first (Ray in the background, or local processes), so that they come
    # up while the driver lists the input
    t0 = time.perf_counter()
    pool = executor == "processes"
    if pool:
        local_pool.begin(workers)
        ours = False
    else:
        show_status(f"{job.name}: starting Ray", say=False)
        ours = init_ray(
            cfg.ray.address,
            cfg.ray.num_cpus,
            cfg.ray.object_store_mb,
            cfg.log_level,
            background=True,
            driver_works=cfg.ray.work_while_starting,
        )
    joined = 0.0 if pool else time.perf_counter() - t0
    try:
        parts = prepare_plan(work_root / "plan.json", partial(job.partitions, cfg), chash)
        log.info("%s: %d partitions", job.name, len(parts))
        log.debug(
            "%s: plan %s (config %s), %s inputs in the first partition, %s in the last",
            job.name,
            work_root / "plan.json",
            chash,
            parts[0].inputs() if parts else 0,
            parts[-1].inputs() if parts else 0,
        )
        run = JobRun(
            cfg,
            out,
            work_root,
            parts,
            progress,
            started,
            joined,
            ray_start.current(),
            local_pool.current(),
            job.name,
        )
        docs = job.run(run)
    except BaseException as exc:
        if pool:  # an error comes once every partition in flight ended; Ctrl-C stops them
            local_pool.end(kill=isinstance(exc, (KeyboardInterrupt, SystemExit)))
        if ours:  # a process on its way out (Ctrl-C) does not wait for Ray to finish starting
            _stop_ray(wait_for_start=not isinstance(exc, (KeyboardInterrupt, SystemExit)))
        raise
    if pool:
        local_pool.end()
    # Ray stops while the reports are drawn: neither needs the other, and each takes a second
    # or two (Ray waits for its processes to exit; matplotlib draws). Before _work/ goes: a
    # report may read pictures of dropped rows from the work pieces.
    stopping = None
    if ours:
        # a cycle holding an ObjectRef must not be collected while Ray goes down (the core
        # worker then ends the process): collect the job's garbage while Ray is still up
        gc.collect()
        stopping = threading.Thread(target=_stop_ray, name="ray-shutdown")
        stopping.start()
    try:
        folders = job.outputs(cfg)
        for name in docs:
            show_status(f"{job.name}: writing the report of {name}", say=False)
            job.report(folders[name])
    finally:
        if stopping is not None:
            stopping.join()
    if not getattr(cfg, "keep_work", False):
        shutil.rmtree(work_root, ignore_errors=True)
    for name, doc in docs.items():
        log.info("%s: %d samples in %d shards", name, doc["samples"], len(doc["shards"]))
    return docs


def _stop_ray(wait_for_start: bool = True) -> None:
    """Stop the Ray this run started (one started in the background stops in its own thread:
    ``engine.ray_start``)."""
    if ray_start.end(wait_for_start) is not None:
        return
    import ray

    ray.shutdown()


def shard_list(metas: dict[int, dict], key: str = "shards") -> list[dict]:
    """The shard set's tars in partition order, from the partitions' done markers."""
    return [s for p in sorted(metas) for s in metas[p].get(key, [])]


def sum_timings(*metas: dict[int, dict]) -> dict[str, float]:
    """Per-stage seconds, summed over partitions and passes."""
    total: dict[str, float] = {}
    for per_pass in metas:
        for meta in per_pass.values():
            for k, v in meta.get("timings_s", {}).items():
                total[k] = total.get(k, 0.0) + v
    return total
