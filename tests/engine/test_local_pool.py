"""Plain partition tasks on local processes (``engine.local_pool``): the executor a job without a
model stage gets on one machine, held to Ray's guarantees: the same files, a dead worker's
partitions run again, a killed driver takes its workers with it, and config that cannot run is
refused before any work."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import psutil
import pyarrow as pa
import pytest

from curation.config import CurateConfig, InputConfig
from curation.curate import CurateJob, curate
from curation.sources import list_partitions, load_partition
from engine import local_pool
from engine.job import choose_executor
from engine.runner import run_partitions
from engine.workdir import WorkDir
from manifests.configs import ConfigError, load_config
from manifests.marks import set_column
from tests.cli import curate_cmd, start_until_done
from tests.curation.test_resume import big_pool, snapshot


class DieOnce:
    """Kills its own worker process the first time it meets partition ``victim`` (a file marks
    that it did), as the OOM killer would; ``always``: every time."""

    name = "die_once"

    def __init__(self, marks: Path, victim: int, always: bool = False):
        self.marks, self.victim, self.always = marks, victim, always

    def __call__(self, batch: pa.Table) -> pa.Table:
        part = batch["partition"][0].as_py()
        mark = self.marks / f"died-{os.getpid()}"
        if part == self.victim and (self.always or not any(self.marks.iterdir())):
            mark.write_text(str(part))
            os.kill(os.getpid(), signal.SIGKILL)
        return set_column(batch, "pid", pa.array([os.getpid()] * batch.num_rows, pa.int64()))


def _run(pool_dir: Path, work_dir: Path, stage) -> tuple[WorkDir, list]:
    cfg = InputConfig(path=str(pool_dir), partition_size=4)
    parts = list_partitions(cfg)
    work = WorkDir(work_dir)
    local_pool.begin(2)
    try:
        run_partitions(work, parts, partial(load_partition, cfg=cfg), [stage], progress=False)
    finally:
        local_pool.end()
    return work, parts


def test_a_worker_that_dies_is_replaced_and_its_partitions_run_again(tmp_path, demo_pool):
    pool, _ = demo_pool
    marks = tmp_path / "marks"
    marks.mkdir()
    work, parts = _run(pool, tmp_path / "work", DieOnce(marks, victim=2))
    assert len(list(marks.iterdir())) == 1  # it did die, once
    assert len(parts) >= 4
    assert all(work.is_done(p.index) for p in parts)
    rows = [work.read_partition(p.index, ["row"])["row"].to_pylist() for p in parts]
    assert [len(r) for r in rows] == [p.inputs() for p in parts]  # nothing lost or doubled
    pids = {x for p in parts for x in work.read_partition(p.index, ["pid"])["pid"].to_pylist()}
    assert os.getpid() not in pids and len(pids) >= 2  # ran in the workers, old and new
    phases = json.loads((tmp_path / "work" / "pass.json").read_text())["phases"]
    assert list(phases) == ["processes"] and phases["processes"]["partitions"] == len(parts)


def test_a_worker_that_keeps_dying_fails_the_pass_with_what_to_do(tmp_path, demo_pool):
    pool, _ = demo_pool
    marks = tmp_path / "marks"
    marks.mkdir()
    with pytest.raises(RuntimeError, match=r"died 4 times .* rerun to retry"):
        _run(pool, tmp_path / "work", DieOnce(marks, victim=1, always=True))
    assert len(list(marks.iterdir())) == local_pool.MAX_BREAKS + 1
    assert local_pool.current() is None


def test_processes_are_refused_where_they_cannot_run(tmp_path):
    def cfg(*sets: str) -> CurateConfig:
        base = ["input.path=data/demo_pool", f"output={tmp_path / 'out'}"]
        return load_config(CurateConfig, "configs/curate_local.yaml", [*base, *sets])

    with pytest.raises(ConfigError, match=r"ray\.executor.*ray\.address"):
        cfg("ray.executor=processes", "ray.address=auto")
    with pytest.raises(ConfigError, match=r"ray\.executor': 'threads' is not one of"):
        cfg("ray.executor=threads")
    clip = cfg("ray.executor=processes", "clip.enabled=true")
    assert CurateJob().needs_ray(clip)
    with pytest.raises(ConfigError, match=r"ray\.executor.*model stage"):
        curate(clip, progress=False)
    assert not (tmp_path / "out" / "_work").exists()  # refused before any work
    assert not CurateJob().needs_ray(cfg())
    assert choose_executor(CurateJob(), cfg("ray.executor=processes")) == "processes"
    assert choose_executor(CurateJob(), cfg("ray.executor=ray")) == "ray"
    assert choose_executor(CurateJob(), cfg("clip.enabled=true")) == "ray"  # auto, a model


def _children(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


@pytest.mark.slow  # ~40 s on 2 cores: `make test-slow` (CI runs it)
def test_a_killed_driver_takes_its_workers_with_it_and_a_rerun_equals_ray(
    tmp_path, demo_pool, ray_local
):
    pool, _ = demo_pool
    big_pool(pool)
    out = tmp_path / "killed"
    sets = [f"input.path={pool}", f"output={out}", "ray.num_cpus=2", "input.partition_size=2"]
    cmd = curate_cmd("configs/curate_local.yaml", sets=[*sets, "shards.max_count=7"])
    proc = start_until_done(cmd, out / "_work" / "write" / "done", 3)
    workers = _children(proc.pid)
    assert len(workers) >= 2
    proc.kill()  # the driver alone, not its process group
    proc.wait(timeout=30)
    _, alive = psutil.wait_procs(workers, timeout=15)
    assert not alive, f"workers outlived their driver: {[p.pid for p in alive]}"
    assert not (out / "dataset.json").exists(), "killed too late to test anything"

    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    stats = json.loads((out / "stats.json").read_text())
    assert list(stats["passes_s"]["write"]["phases"]) == ["processes"]  # auto: no Ray started
    assert 0 <= stats["ray_start_s"] < stats["wall_s"]  # here: the local workers' start
    assert stats["workers"] == 2  # ray.num_cpus: no model, so no memory to fit them in

    reference = tmp_path / "reference"  # in this process, whose Ray is up: it runs on Ray
    ref_sets = [f"input.path={pool}", f"output={reference}", "input.partition_size=2"]
    curate(
        load_config(CurateConfig, "configs/curate_local.yaml", [*ref_sets, "shards.max_count=7"]),
        progress=False,
    )
    ref_stats = json.loads((reference / "stats.json").read_text())
    assert list(ref_stats["passes_s"]["write"]["phases"]) == ["ray"]
    assert ref_stats["workers"] is None  # Ray's, not ours
    got_ledger, got_shards = snapshot(out)
    want_ledger, want_shards = snapshot(reference)
    assert got_ledger == want_ledger and len(got_ledger) > 40
    assert got_shards.keys() == want_shards.keys() and len(got_shards) > 1
    assert got_shards == want_shards


SCRIPT = """
from pathlib import Path
import sys
from curation.config import CurateConfig
from curation.curate import curate
from manifests.configs import load_config

with open(sys.argv[3], "a") as f:  # at import, with no main guard: once per run of this file
    f.write("ran\\n")
cfg = load_config(CurateConfig, "configs/curate_local.yaml",
                  [f"input.path={sys.argv[1]}", f"output={sys.argv[2]}", "ray.num_cpus=2"])
print(curate(cfg, progress=False)["samples"])
"""


def test_a_script_without_a_main_guard_runs_once(tmp_path, demo_pool):
    """multiprocessing's workers import the driver's __main__ by default: the job's own script,
    run again in every worker. Ours never do."""
    pool, _ = demo_pool
    script, ran = tmp_path / "job.py", tmp_path / "ran.txt"
    script.write_text(SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), str(pool), str(tmp_path / "out"), str(ran)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert ran.read_text() == "ran\n"
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert list(stats["passes_s"]["write"]["phases"]) == ["processes"]
    assert int(done.stdout.split()[-1]) == stats["kept"] > 0


def _square_or_fail(x: int) -> int:
    if x == 3:
        raise ValueError("three is refused")
    if x == 5:
        return lambda: None  # a result that does not pickle
    return x * x


def test_the_pool_runs_items_on_its_workers_with_no_thread_of_its_own():
    import threading

    before = threading.active_count()
    pool = local_pool.LocalPool(2)
    try:
        got: dict[int, object] = {}

        def done(item, fut):
            exc = fut.exception()
            got[item] = fut.result() if exc is None else exc
            assert threading.active_count() == before  # the driver waits on pipes itself

        local_pool.run_all(pool, _square_or_fail, list(range(8)), done)
    finally:
        pool.close()
    assert sorted(got) == list(range(8))
    assert {k: v for k, v in got.items() if k not in (3, 5)} == {
        x: x * x for x in (0, 1, 2, 4, 6, 7)
    }
    assert isinstance(got[3], ValueError) and "three is refused" in str(got[3])
    assert "_square_or_fail" in str(got[3].__cause__)  # the worker's traceback comes along
    assert isinstance(got[5], RuntimeError)  # said, not a dead worker nor a hang
    assert pool.breaks == 0
    assert threading.active_count() == before


def _names_or_fail(x: int) -> list[str]:
    if x == 0:
        raise OSError("the first folder cannot be read")
    time.sleep(0.5)  # the other worker is still at it when the error reaches the driver
    return [f"name-{i:08d}" for i in range(200_000)]  # far more than a pipe holds


def test_a_pool_whose_run_failed_still_closes_with_large_results_in_flight():
    pool = local_pool.LocalPool(2)
    pids = [w.proc.pid for w in pool._procs]
    try:
        pool.wait_ready()

        def done(item, fut):
            fut.result()  # the error is the caller's: it leaves the run with the other in flight

        with pytest.raises(OSError, match="cannot be read"):
            local_pool.run_all(pool, _names_or_fail, [1, 0], done)
    finally:
        pool.close()  # reads and drops the other worker's 2 MB answer (before: hung here)
    assert not any(psutil.pid_exists(p) for p in pids)  # both ended and were reaped


def _threads_then_leave_traces(marks: Path, item: int) -> str | None:
    """What a task sees of its OpenMP threads; it also leaves what a worker's exit must keep (a
    half-written line on stdout, a log record) and what its teardown would run (an atexit
    hook that writes a file)."""
    import atexit
    import logging
    import logging.handlers

    atexit.register(lambda: (marks / f"atexit-{os.getpid()}").write_text("ran"))
    log = logging.getLogger(f"vl3data.test.worker.{item}")
    to_file = logging.FileHandler(marks / f"log-{os.getpid()}-{item}")
    log.addHandler(logging.handlers.MemoryHandler(100, target=to_file))  # holds records
    log.warning("a record the worker's exit flushes")
    print(f"unflushed-{os.getpid()}", end="")  # stdout is not a terminal: block-buffered
    return os.environ.get("OMP_NUM_THREADS")


@pytest.mark.parametrize("user_threads", [None, "3"])
def test_workers_get_their_share_of_threads_and_exit_without_teardown(
    tmp_path, monkeypatch, capfd, user_threads
):
    monkeypatch.delenv("PYTHONUNBUFFERED", raising=False)  # the workers' stdout is buffered
    if user_threads is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", user_threads)
    pool = local_pool.LocalPool(2)
    pids = [w.proc.pid for w in pool._procs]
    seen: list[str | None] = []
    try:
        local_pool.run_all(
            pool,
            partial(_threads_then_leave_traces, tmp_path),
            [0, 1, 2, 3],
            lambda item, fut: seen.append(fut.result()),
        )
    finally:
        pool.close()
    # as Ray does: a worker's share of the CPUs (torch's intra-op threads), unless the user
    # chose; without it, two workers each started a thread per core for their models
    share = str(max(1, local_pool.cpu_count() // 2))
    assert seen == [user_threads or share] * 4
    assert not any(psutil.pid_exists(p) for p in pids)
    ran = {p.name for p in tmp_path.iterdir()}
    assert not any(n.startswith("atexit-") for n in ran)  # no interpreter teardown (torch's: 1.2 s)
    logs = [tmp_path / n for n in ran if n.startswith("log-")]
    assert len(logs) == 4 and all("flushes" in p.read_text() for p in logs)  # handlers flushed
    out = capfd.readouterr().out
    assert all(f"unflushed-{p.name.split('-')[1]}" in out for p in logs)  # and the streams
