"""Plain partition tasks on a pool of local processes, for a job that needs no Ray.

Starting an embedded Ray costs 3-4 s on a laptop (its GCS, raylet, dashboard process and agents
start one after another; ``ray.init`` waits for each) and stopping it 1-1.5 s more: a third of a
12,000-image job on 2 cores, and more than the whole work of a small one. A job whose passes
are all plain partition tasks (no model stage, so no Ray Data actor pool) gets nothing from Ray
on one machine that a process pool does not give: the same ``PartitionTask`` runs in the same
kind of worker process, writes the same files, and the driver sees the same per-partition
metadata. img2dataset makes the same choice (its default distributor is ``multiprocessing``,
Ray or Spark for clusters). So ``ray.executor: auto`` (the default) runs such a job here when
no cluster address is given and Ray is not up already; a model pass, a cluster, or
``ray.executor: ray`` get Ray.

What Ray did for us that the pool must do too:

* **A worker that dies** (the OOM killer, a crash in a native decoder) breaks the whole
  ``ProcessPoolExecutor``: every partition then in flight is queued again on a new pool, at
  most ``MAX_BREAKS`` times in a run (Ray retries a task whose worker died three times).
  A partition is redone whole, so nothing is doubled.
* **A driver killed with -9** must not leave workers writing behind it while a rerun writes
  the same partitions: each worker asks the kernel for SIGKILL when its parent dies
  (``PR_SET_PDEATHSIG``, as Ray's raylet does for its workers).
* **Ctrl-C** reaches every process of the terminal's group: the workers ignore it, and the
  driver, which decides, kills them and exits.

Workers are started with ``spawn`` (a fresh interpreter: nothing of the driver's threads or
pyarrow's pools is forked) from the driver's own thread, as soon as the job starts, so they
import what they need while the driver plans, and their death signal is tied to the driver. (A
``forkserver`` would start them faster, but its workers are its children, and it and they keep
each other alive once the driver is gone: measured, a killed driver left all of them running.)
No worker imports the driver's ``__main__``, which multiprocessing does by default: a user's
script that calls ``curate(cfg)`` without an ``if __name__ == "__main__"`` guard would start the
job again in every worker. A task never needs it (cloudpickle sends what ``__main__`` defines by
value), so while the workers start, ``__main__`` is a blank module to multiprocessing
(``_blank_main``). A pass's task is pickled once (cloudpickle, as Ray does), unpickled once per
worker.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import logging
import multiprocessing
import os
import signal
import sys
import time
import types
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

log = logging.getLogger(__name__)

#: times a run's pool may break (a worker died) before the pass gives up; Ray's default task
#: retries on a dead worker are 3 as well
MAX_BREAKS = 3
#: Linux prctl option: the signal this process gets when the thread that started it ends
_PR_SET_PDEATHSIG = 1


def cpu_count() -> int:
    """The CPUs this process may run on (a container's or ``taskset``'s limit, not the box's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class LocalPool:
    """``workers`` processes that run pickled partition tasks. Create it from the main thread:
    the workers' death signal is tied to the thread that starts them."""

    def __init__(self, workers: int):
        self.workers = workers
        self.breaks = 0
        self.waited_s = 0.0  # how long the work sat waiting for the workers to start
        self._warming: list[Future] = []
        self._ctx = multiprocessing.get_context("spawn")
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        pool = ProcessPoolExecutor(self.workers, mp_context=self._ctx, initializer=_worker_setup)
        with _blank_main():  # every worker starts here, none later (no submit finds none idle)
            self._warming = [pool.submit(_warm) for _ in range(self.workers)]
        return pool

    def wait_ready(self) -> None:
        """Block until every worker has started and imported what tasks need (as a pass on Ray
        waits for Ray's start), so a pass's time is its work's; in slices, for Ctrl-C."""
        t = time.perf_counter()
        while not all(f.done() for f in self._warming):
            wait(self._warming, timeout=0.25)
        self.waited_s += time.perf_counter() - t

    def submit(self, blob: bytes, key: str, arg: Any) -> Future:
        """Run the pickled callable ``blob`` (known to workers by ``key``) on ``arg``."""
        return self._pool.submit(_call, key, blob, arg)

    def renew(self) -> None:
        """A worker died and took the pool with it: a new one, or an error after MAX_BREAKS."""
        self.breaks += 1
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self.breaks > MAX_BREAKS:
            raise RuntimeError(
                f"a worker process died {self.breaks} times (out of memory? a crash in a "
                "decoder?); rerun to retry the partitions left, with fewer or larger workers "
                "(ray.num_cpus) if memory ran out"
            )
        log.warning("a worker process died; its partitions run again on a new pool")
        self._pool = self._new_pool()

    def close(self, kill: bool = False) -> None:
        """Stop the workers: wait for them (the job is done, or failed once every partition in
        flight ended), or kill them (Ctrl-C)."""
        if kill:  # a partition left half-written is redone whole by a rerun
            for proc in list((getattr(self._pool, "_processes", None) or {}).values()):
                proc.kill()
        # waited for even after a kill: the pool then releases its queues' semaphores (a
        # process that exits first leaves multiprocessing's tracker warning about them)
        self._pool.shutdown(wait=True, cancel_futures=True)


@contextlib.contextmanager
def _blank_main() -> Iterator[None]:
    """``__main__`` as a module with no file and no spec while processes start, so that
    multiprocessing's preparation data names no main module for them to import."""
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


def run_all(
    pool: LocalPool,
    fn: Callable[[Any], dict],
    items: list,
    window: int,
    on_done: Callable[[Any, Future], None],
) -> None:
    """``fn(item)`` for every item on ``pool``, at most ``window`` in flight; ``on_done(item,
    future)`` for each as it finishes (``items`` is consumed from its end). Items in flight when
    a worker dies are queued again; waits are sliced so a Ctrl-C is seen at once."""
    import cloudpickle

    blob = cloudpickle.dumps(fn)
    key = hashlib.blake2b(blob, digest_size=8).hexdigest()
    running: dict[Future, Any] = {}
    while items or running:
        while items and len(running) < window:
            item = items.pop()
            running[pool.submit(blob, key, item)] = item
        done, _ = wait(list(running), timeout=0.25, return_when=FIRST_COMPLETED)
        broken = []
        for fut in done:
            item = running.pop(fut)
            if isinstance(fut.exception(), BrokenProcessPool):
                broken.append(item)
            else:
                on_done(item, fut)
        if broken:
            broken += list(running.values())  # the whole pool went down with the dead worker
            running.clear()
            pool.renew()
            items.extend(reversed(broken))


def map_on_workers(fn: Callable[[Any], Any], items: list) -> list:
    """``[fn(x) for x in items]``, computed on the running pool's workers when there is one (in
    item order), else here, one after the other (a job on Ray plans before its workers are up).

    For planning work that grows with the input (listing a folder's subfolders): the driver
    should not do per-input work, and the workers are idle until the plan exists. Their start
    must end before any partition runs either way; what this adds to the critical path is the
    work itself, shared among them.
    """
    pool = current()
    if pool is None or len(items) < 2:
        return [fn(x) for x in items]
    pool.wait_ready()  # counted as the workers' start (stats.json: ray_start_s), as a pass does
    results: dict[int, Any] = {}

    def done(pair: tuple[int, Any], fut: Future) -> None:
        results[pair[0]] = fut.result()  # an error here is the caller's, as it would be here

    run_all(
        pool, functools.partial(_second, fn), list(enumerate(items))[::-1], pool.workers * 2, done
    )
    return [results[i] for i in range(len(items))]


def _second(fn: Callable[[Any], Any], pair: tuple[int, Any]) -> Any:
    return fn(pair[1])


# --- in the workers -------------------------------------------------------------------------

_FNS: dict[str, Callable] = {}


def _worker_setup() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver decides what a Ctrl-C stops
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:  # not glibc: a killed driver leaves its workers to finish their partition
        pass
    if os.getppid() == 1:  # the driver died before the signal was asked for
        os._exit(1)


def _warm() -> None:
    """Submitted once per worker when the pool starts: every worker starts now and imports
    what every partition task needs while the driver plans, not when the first one arrives."""
    import cloudpickle  # noqa: F401
    import pyarrow.compute
    import pyarrow.parquet  # noqa: F401


def _call(key: str, blob: bytes, arg: Any) -> Any:
    fn = _FNS.get(key)
    if fn is None:
        import cloudpickle

        fn = _FNS[key] = cloudpickle.loads(blob)
    return fn(arg)


# --- the process's one pool (a job's run) -----------------------------------------------------

_current: LocalPool | None = None


def begin(workers: int | None = None) -> LocalPool:
    """Start the pool the job's passes run on (``workers``: default one per CPU)."""
    global _current
    if _current is not None:
        raise RuntimeError("a local pool is already running in this process")
    n = workers or cpu_count()
    log.info("starting %d local worker processes (no stage needs Ray)", n)
    _current = LocalPool(n)
    return _current


def current() -> LocalPool | None:
    return _current


def end(kill: bool = False) -> None:
    """Stop the pool, if one runs (``kill``: at once, for Ctrl-C or an error)."""
    global _current
    pool, _current = _current, None
    if pool is not None:
        pool.close(kill)
