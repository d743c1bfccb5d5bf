"""How many workers fit when each holds its own copy of a model.

A job whose partition tasks load a model (the raw-video job's clip captions on CPU) keeps one
copy per worker process: N per machine for N CPUs. A 2B-parameter captioner in fp32 is ~9 GB,
so sixteen workers would ask for 140 GB. The job says what one worker holds
(:class:`WorkerMemory`); on local processes the pool starts only as many workers as fit
(:func:`workers_that_fit`), and on Ray each task asks for that much of Ray's ``memory``
resource, so no node runs more of them at once than it has room for (:func:`ray_task_options`).
Where not even one fits, the run is refused before its work, naming the model's field.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from manifests.configs import ConfigError

log = logging.getLogger(__name__)

GIB = 2**30


@dataclass(frozen=True)
class WorkerMemory:
    """What one worker process holds when a job's tasks each load a model."""

    bytes: int
    field: str  # the config field that names the model (a refusal names it)
    fix: str  # what the user can do when not even one worker fits


def _refuse(need: WorkerMemory, room: str) -> ConfigError:
    return ConfigError(
        need.field,
        f"one worker process needs ~{need.bytes / GIB:.1f} GiB for its own copy of the model "
        f"and torch, and {room}",
        f"{need.fix}, or free memory (ray.memory_gb says how much local workers may take)",
    )


def workers_that_fit(n: int, need: WorkerMemory | None, memory_gb: float | None, job: str) -> int:
    """Of ``n`` local workers, as many as fit in ``memory_gb`` (default: the memory available
    now), at least one; a warning when fewer than ``n``, a ConfigError when none."""
    if need is None:
        return n
    if memory_gb:
        budget = memory_gb * GIB
        room = f"ray.memory_gb gives the workers {budget / GIB:.1f} GiB"
    else:
        import psutil

        budget = psutil.virtual_memory().available
        room = f"{budget / GIB:.1f} GiB is available"
    fit = int(budget // need.bytes)
    if fit < 1:
        raise _refuse(need, room)
    if fit < n:
        log.warning(
            "%s: starting %d worker processes, not %d: each holds its own copy of the model "
            "(~%.1f GiB with torch) and %s",
            job,
            fit,
            n,
            need.bytes / GIB,
            room,
        )
    return min(n, fit)


def stage_memory(stages: Iterable[Any]) -> WorkerMemory | None:
    """The largest ``memory`` (a :class:`WorkerMemory`) the stages of a task declare."""
    found = [m for s in stages if (m := getattr(s, "memory", None)) is not None]
    return max(found, key=lambda m: m.bytes, default=None)


def ray_task_options(need: WorkerMemory | None, nodes: list[dict]) -> dict:
    """Options of a partition task on Ray: one CPU, and ``need``'s bytes of Ray's ``memory``
    resource, refused before any task when no live node of ``nodes`` (``ray.nodes()``) has
    that much (Ray would otherwise queue the tasks for ever)."""
    if need is None:
        return {"num_cpus": 1}
    largest = max(
        (n.get("Resources", {}).get("memory", 0) for n in nodes if n.get("Alive")), default=0
    )
    if need.bytes > largest:
        raise _refuse(need, f"the largest Ray node offers {largest / GIB:.1f} GiB")
    return {"num_cpus": 1, "memory": need.bytes}
