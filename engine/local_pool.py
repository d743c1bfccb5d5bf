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

* **A worker that dies** (the OOM killer, a crash in a native decoder): the partition it ran
  is queued again and a new worker takes its place, at most ``MAX_BREAKS`` times in a run
  (Ray retries a task whose worker died three times). A partition is redone whole, so
  nothing is doubled.
* **A driver killed with -9** must not leave workers writing behind it while a rerun writes
  the same partitions: each worker asks the kernel for SIGKILL when its parent dies
  (``PR_SET_PDEATHSIG``, as Ray's raylet does for its workers).
* **Ctrl-C** reaches every process of the terminal's group: the workers ignore it, and the
  driver, which decides, kills them and exits.
* **Threads**: Ray sets ``OMP_NUM_THREADS`` to a worker's CPUs (1 for a one-CPU task) unless
  the user set it, so that N workers with a torch model do not each start a thread per core.
  The pool does the same (``cpu_count() // workers``). Without it, the raw-video job's eight
  videos on two workers took 6.4-6.9 s of task time for their 48 clip captions, and 0.7-0.8 s
  with one thread a worker (``bench/bench_scenes.py --local --copies 8``, 2 cores): two
  workers' four OpenMP threads, which spin while they wait, shared two cores with ffmpeg.
* **Exit**: a worker told to stop has sent its results and written its files; it flushes its
  streams and log handlers and leaves with ``os._exit``, without the interpreter's teardown
  (a worker holding torch and transformers took 1.2 s over it; the driver waits for them).

Workers are started with ``spawn`` (a fresh interpreter: nothing of the driver's threads or
pyarrow's pools is forked) from the driver's own thread, as soon as the job starts, so they
import what they need while the driver plans, and their death signal is tied to the driver. (A
``forkserver`` would start them faster, but its workers are its children, and it and they keep
each other alive once the driver is gone: measured, a killed driver left all of them running.)
No worker imports the driver's ``__main__``, which multiprocessing does by default: a user's
script that calls ``curate(cfg)`` without an ``if __name__ == "__main__"`` guard would start the
job again in every worker. A task never needs it (cloudpickle sends what ``__main__`` defines by
value), so while the workers start, ``__main__`` is a blank module to multiprocessing
(``_blank_main``). A pass's task is pickled once (cloudpickle, as Ray does), sent to and
unpickled by each worker once.

Each worker has one pipe to the driver and runs one partition at a time; the driver sends the
next when its result comes back, and waits on the pipes and on the workers' exit sentinels
itself (``multiprocessing.connection.wait``). A ``ProcessPoolExecutor`` put two threads of its
own between them (a manager waking several times a task, a queue feeder): 0.05 s of the
driver's CPU for 100 partitions, most of what its cost grew by from 10k to 100k inputs
(a scratch script timing each thread). A worker waits for the driver between partitions for
the time one message takes, against partitions of seconds.
"""

from __future__ import annotations

import atexit
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
import traceback
import types
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from multiprocessing.connection import Connection, wait
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


class _Worker:
    """One worker process and the driver's end of its pipe."""

    def __init__(self, ctx: Any, threads: int):
        here, there = ctx.Pipe()
        with _blank_main():
            self.proc = ctx.Process(target=_serve, args=(there, threads), name="vl3data-worker")
            self.proc.start()
        there.close()
        self.conn: Connection = here
        self.ready = False  # it has imported what tasks need (its first message says so)
        self.keys: set[str] = set()  # the callables it holds
        self.job: tuple[Any, Future] | None = None  # the item it runs

    def send(self, key: str, blob: bytes, item: Any) -> None:
        self.job = (item, Future())
        try:
            self.conn.send((key, None if key in self.keys else blob, item))
        except OSError:  # it died since: its sentinel says so, and the item is run again
            return
        self.keys.add(key)

    def receive(self) -> bool:
        """Take its next message (False: it is dead). A result finishes its job's future."""
        try:
            msg = self.conn.recv()
        except (EOFError, OSError):
            return False
        except Exception as exc:  # a result this process cannot unpickle: the task's failure
            msg = (False, exc, "")
        if msg == _READY:
            self.ready = True
            return True
        ok, value, remote_tb = msg
        assert self.job is not None, "a worker answered with nothing in flight"
        fut, self.job = self.job[1], None
        if ok:
            fut.set_result(value)
        else:
            if remote_tb:
                value.__cause__ = RemoteTraceback(remote_tb)
            fut.set_exception(value)
        return True

    def stop(self, kill: bool) -> None:
        if self.conn.closed:
            return
        if kill:
            self.proc.kill()
        else:
            with contextlib.suppress(OSError, ValueError):
                self.conn.send(None)  # it ends after the task it runs
            # what it still sends is read and dropped: a worker whose result fills the pipe
            # (a failed pass no longer reads them) would otherwise never get to the None
            while self.proc.is_alive():
                try:
                    if self.conn.poll(0.25):
                        self.conn.recv()
                except (EOFError, OSError):
                    break
                except Exception:  # a result this process cannot unpickle: dropped anyway
                    continue
        self.proc.join()
        self.conn.close()
        self.proc.close()


class RemoteTraceback(Exception):
    """A worker's traceback, as the cause of the exception its task raised."""

    def __str__(self) -> str:
        return self.args[0]


class LocalPool:
    """``workers`` processes that run pickled partition tasks. Create it from the main thread:
    the workers' death signal is tied to the thread that starts them."""

    def __init__(self, workers: int):
        self.workers = workers
        self.breaks = 0
        self.waited_s = 0.0  # how long the work sat waiting for the workers to start
        self._ctx = multiprocessing.get_context("spawn")
        #: a worker's share of the CPUs: its OpenMP threads, unless OMP_NUM_THREADS is set
        self.threads = max(1, cpu_count() // workers)
        # every worker starts now, so that it imports while the driver plans
        self._procs = [_Worker(self._ctx, self.threads) for _ in range(workers)]
        self._queue: list = []  # the items of the run under way (a dead worker's go back)

    def wait_ready(self) -> None:
        """Block until every worker has started and imported what tasks need (as a pass on Ray
        waits for Ray's start), so a pass's time is its work's; in slices, for Ctrl-C."""
        t = time.perf_counter()
        while not all(w.ready for w in self._procs):
            self._wait(0.25)
        self.waited_s += time.perf_counter() - t

    def run(self, key: str, blob: bytes, items: list, on_done: Callable[[Any, Future], None]):
        """Each of ``items`` (consumed from its end) through the callable ``blob`` (known to
        workers by ``key``), one at a time per worker; ``on_done(item, future)`` as each
        ends. A dead worker's item runs again, on the worker that replaces it."""
        self._queue = items
        while items or any(w.job for w in self._procs):
            for w in self._procs:
                if items and w.job is None:
                    w.send(key, blob, items.pop())
            for item, fut in self._wait(0.25):
                on_done(item, fut)

    def _wait(self, timeout: float) -> list[tuple[Any, Future]]:
        """Wait (at most ``timeout`` s) for messages, take them, and replace the workers that
        died (their item goes back on the queue ``run`` takes from next). The jobs that ended."""
        conns = {w.conn: w for w in self._procs}
        sentinels = {w.proc.sentinel: w for w in self._procs}
        done: list[tuple[Any, Future]] = []
        gone: list[_Worker] = []

        def take(w: _Worker) -> bool:
            job = w.job
            if not w.receive():
                return False
            if job is not None and w.job is None:
                done.append(job)
            return True

        for ready in wait([*conns, *sentinels], timeout):
            w = conns.get(ready) or sentinels[ready]
            if w in gone:
                continue
            if ready in conns:
                if not take(w):
                    gone.append(w)
                continue
            while w.conn.poll() and take(w):  # it exited: what it sent before counts
                pass
            gone.append(w)
        for w in gone:
            self._replace(w)
        return done

    def _replace(self, w: _Worker) -> None:
        """A worker died: a new one in its place, its item queued again, or an error after
        MAX_BREAKS deaths."""
        self.breaks += 1
        self._procs.remove(w)
        job, w.job = w.job, None
        w.stop(kill=True)
        if self.breaks > MAX_BREAKS:
            raise RuntimeError(
                f"a worker process died {self.breaks} times (out of memory? a crash in a "
                "decoder?); rerun to retry the partitions left, with fewer or larger workers "
                "(ray.num_cpus) if memory ran out"
            )
        log.warning("a worker process died; its partition runs again on a new one")
        self._procs.append(_Worker(self._ctx, self.threads))
        if job is not None:
            self._queue.append(job[0])

    def close(self, kill: bool = False) -> None:
        """Stop the workers: wait for them (the job is done, or failed once every partition in
        flight ended), or kill them (Ctrl-C). A partition left half-written is redone whole by
        a rerun."""
        for w in self._procs:
            w.stop(kill)


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
    on_done: Callable[[Any, Future], None],
) -> None:
    """``fn(item)`` for every item on ``pool``, one at a time per worker; ``on_done(item,
    future)`` for each as it finishes (``items`` is consumed from its end). An item whose worker
    died runs again; waits are sliced so a Ctrl-C is seen at once."""
    import cloudpickle

    blob = cloudpickle.dumps(fn)
    pool.run(hashlib.blake2b(blob, digest_size=8).hexdigest(), blob, items, on_done)


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

    run_all(pool, functools.partial(_second, fn), list(enumerate(items))[::-1], done)
    return [results[i] for i in range(len(items))]


def _second(fn: Callable[[Any], Any], pair: tuple[int, Any]) -> Any:
    return fn(pair[1])


# --- in the workers -------------------------------------------------------------------------

#: a worker's first message: it has started and imported what tasks need
_READY = "ready"


def _worker_setup() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver decides what a Ctrl-C stops
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:  # not glibc: a killed driver leaves its workers to finish their partition
        pass
    if os.getppid() == 1:  # the driver died before the signal was asked for
        os._exit(1)


def _exit_now() -> None:
    """End the worker without the interpreter's teardown: its results are sent and its files
    written, and tearing down torch and transformers took a worker holding the tiny InternVL
    1.2 s (its atexit handlers 7 ms of it), which the driver waited for at every job's end (two
    workers: 2.5 s of a 9-s job). Log handlers and the standard streams are flushed first."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(0)


def _serve(conn: Connection, threads: int) -> None:
    """A worker: imports what every partition task needs (while the driver plans), says so,
    then runs what it is sent until it is sent None or the driver is gone. ``threads``: its
    OpenMP threads (``OMP_NUM_THREADS``, read when torch or numpy's BLAS load), unless the
    user set them."""
    _worker_setup()
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    import cloudpickle
    import pyarrow.compute
    import pyarrow.parquet  # noqa: F401

    conn.send(_READY)
    fns: dict[str, Callable] = {}
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            _exit_now()
        if msg is None:
            _exit_now()
        key, blob, arg = msg
        try:
            if key not in fns:
                fns[key] = cloudpickle.loads(blob)
            out = (True, fns[key](arg), "")
        except BaseException as exc:  # the task's failure is the driver's to report
            out = (False, exc, traceback.format_exc())
        try:
            conn.send(out)
        except Exception as exc:  # a result or an exception that does not pickle
            tb = traceback.format_exc()
            conn.send((False, RuntimeError(f"{type(exc).__name__}: {exc}"), tb))


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
    atexit.register(_kill_at_exit)  # before multiprocessing's own hook, which would wait for them
    return _current


def current() -> LocalPool | None:
    return _current


def end(kill: bool = False) -> None:
    """Stop the pool, if one runs (``kill``: at once, for Ctrl-C or an error)."""
    global _current
    pool, _current = _current, None
    if pool is not None:
        pool.close(kill)


def _kill_at_exit() -> None:
    """A process that exits with its pool still up (an error past the job's own clean-up):
    its workers are killed, not waited for (each waits for its next partition)."""
    atexit.unregister(_kill_at_exit)
    end(kill=True)
