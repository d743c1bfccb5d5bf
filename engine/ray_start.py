"""An embedded Ray brought up in the background, so the driver works while it starts.

Starting Ray on a laptop takes 3-4 s, most of it one process waiting for the next (the GCS,
the raylet, their agents): the CPUs sit mostly idle. So ``engine.job.run_job`` starts an
embedded Ray in a thread and plans meanwhile. With ``ray.work_while_starting`` a pass of plain
partition tasks also runs its first partitions in the driver until Ray is up, then hands the
rest to Ray's workers (``engine.runner``); anything that needs Ray itself (a model pass, a
task) waits for it here. A partition's files depend only on the partition, so the output is
the same wherever it ran. That is off by default: on an idle 2-core box it saved about a
second of a 12,000-image job, but on a busy one the driver's work took the core Ray's start
needed, and the start took 2-3x as long.

A Ray that is joined (a cluster address, ``ray job``) is never started this way: joining is
quick, and on a cluster the driver must not do the workers' job.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

#: Ray's own warning when ``ray.init`` runs outside the main thread: we install the same
#: SIGTERM handler from the main thread instead (``begin``)
_SIGTERM_WARNING = "SIGTERM handler is not set"


class RayStart:
    """One start-up of Ray in a thread: whether it is done, and how long the work waited for
    it (its own length is logged: "Ray up in ... s")."""

    def __init__(self, start: Callable[[], None], driver_works: bool = False):
        self.driver_works = driver_works  # the driver runs partitions until Ray is up
        self.waited_s = 0.0  # how long the work sat waiting for it
        self.error: BaseException | None = None
        self._when_up: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._stop = threading.Event()
        # The thread lives until Ray is stopped, and stops it: Ray's processes are started with
        # a parent-death signal, which Linux sends when the *thread* that started them ends
        # (a raylet killed under a live driver ends it at its next ray.put). A daemon, so an
        # interpreter exiting early is not held up: Ray's exit hook stops its processes then.
        self._thread = threading.Thread(
            target=self._run, args=(start,), name="ray-start", daemon=True
        )
        self._thread.start()

    def _run(self, start: Callable[[], None]) -> None:
        try:
            start()
        except BaseException as exc:  # said by wait(), in the thread that needs Ray
            self.error = exc
        finally:
            with self._lock:
                self._done.set()
        if self.error is None:
            for fn in self._when_up:
                try:
                    fn()
                except Exception as exc:  # a head start, not the work: the work goes on
                    log.debug("after Ray's start: %s failed: %s", fn, exc)
            self._stop.wait()
            import ray

            ray.shutdown()

    def done(self) -> bool:
        return self._done.is_set()

    def when_up(self, fn: Callable[[], None]) -> bool:
        """Have the starting thread call ``fn`` as soon as Ray is up (so workers can import
        a pass's modules while the driver finishes its partition); False when Ray's start is
        already over (then nothing is called)."""
        with self._lock:
            if self._done.is_set():
                return False
            self._when_up.append(fn)
            return True

    def wait(self) -> None:
        """Block until the start is over; raise if Ray did not come up."""
        if not self._done.is_set():
            t = time.perf_counter()
            while not self._done.wait(0.25):  # in slices: a Ctrl-C is seen when it wakes
                pass
            self.waited_s += time.perf_counter() - t
        if self.error is not None:
            raise RuntimeError(f"Ray did not start: {self.error}") from self.error


_current: RayStart | None = None
_begun = False  # a start was begun in this process: its thread stops the Ray it started


def begin(start: Callable[[], None], driver_works: bool = False) -> RayStart:
    """Run ``start`` (an embedded ``ray.init``) in a thread; the process's one Ray start.
    ``driver_works``: passes run partitions in the driver until Ray is up."""
    global _current, _begun
    _begun = True
    if threading.current_thread() is threading.main_thread():
        _quiet_thread_warning()
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            # what ray.init installs from the main thread: SIGTERM unwinds (exit hooks run and
            # stop Ray's processes) instead of killing the driver outright
            signal.signal(signal.SIGTERM, _exit_on_sigterm)
    _current = RayStart(start, driver_works)
    return _current


def begun() -> bool:
    """Whether this process started a Ray in the background (that Ray is stopped by its own
    thread, ``end``; nobody else may call ``ray.shutdown`` while it may still be starting)."""
    return _begun


def current() -> RayStart | None:
    """The background start of this process, if one was begun and not yet ended."""
    return _current


def up_here() -> bool:
    """Whether this process already runs Ray or is starting one (in the background, or as a
    build's Ray worker), without importing ray."""
    loaded = sys.modules.get("ray")  # imported only by whoever needs it: the start may do it
    return _current is not None or (loaded is not None and loaded.is_initialized())


def driver_may_work() -> bool:
    """Whether the driver should run partitions itself now: a start is under way in the
    background and was begun with ``driver_works``."""
    return _current is not None and _current.driver_works and not _current.done()


def wait_for_ray() -> None:
    """Block until a background start is over (nothing to wait for without one)."""
    if _current is not None:
        _current.wait()


def end(wait: bool = True) -> RayStart | None:
    """Stop a Ray started in the background and forget it; None when there was none.

    ``wait``: a start still under way is let finish, then stopped (a half-started Ray would
    leave processes behind in a process that goes on). A process that is exiting (Ctrl-C)
    passes False: the start's processes die with its thread (their parent-death signal)."""
    global _current
    start, _current = _current, None
    if start is None:
        return None
    start._stop.set()
    if wait or start.done():
        start._done.wait()
        start._thread.join()
    return start


def _exit_on_sigterm(signum: int, frame: object) -> None:
    sys.exit(signum)


class _DropThreadWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return _SIGTERM_WARNING not in record.getMessage()


def _quiet_thread_warning() -> None:
    logger = logging.getLogger("ray._private.worker")
    if not any(isinstance(f, _DropThreadWarning) for f in logger.filters):
        logger.addFilter(_DropThreadWarning())
