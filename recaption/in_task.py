"""Image captions inside the partition tasks, for engines that need no actor pool.

A Ray Data actor pool suits a model on a GPU (vLLM, transformers on CUDA): one engine serves
every partition. Two engines do not need one:

* transformers on the CPU: every worker process can hold its own copy of a small model, and
  the actor pool's fixed cost (start Ray, start the pool, load the model there) was most of a
  laptop run;
* an OpenAI-compatible server: the model lives in the server and the engine is a connection
  pool, so a worker costs nothing to set up.

With them (``run_in: auto``, or ``tasks``) the captioning pass is plain partition tasks, so a
job with no cluster runs on local worker processes and starts no Ray (``engine.local_pool``).
Each process loads an engine once and keeps it for its later partitions, and for the other
subset when both name the same engine (:func:`engine_in_process`). A task captions its whole
partition in one call, as the actor does (its ``batch_size`` is the partition), so the engine's
batches, hence greedy captions, are the same on either path. The video job's raw clips do the
same with a model load that overlaps the decode (``video_prep.raw_captions``).
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from engine.worker_memory import WorkerMemory
from recaption.engines.base import EngineConfig
from recaption.engines.weights import loaded_bytes
from recaption.prompts import PromptConfig
from recaption.stage import CaptionStage

#: what a worker process holding a transformers model takes besides the weights: torch,
#: transformers and the processor (peak RSS of a worker with the tiny InternVL: 906 MiB)
WORKER_RUNTIME_BYTES = 1 << 30

#: per worker process: loaded engines by their config
_ENGINES: dict[str, Any] = {}


def engines_memory(engines: list[tuple[str, EngineConfig]], fix: str) -> WorkerMemory | None:
    """What one worker needs to hold the transformers models of ``engines`` (``(field,
    config)`` pairs; each distinct model once, at its precision, plus the runtime); None when
    none loads a model here or a model's size is unknown (not in safetensors files)."""
    sizes: dict[tuple[str, str], int] = {}
    field = None
    for name, e in engines:
        if e.kind != "transformers":
            continue
        size = loaded_bytes(e.model, e.precision)
        if size is None:
            return None
        sizes[(e.model, e.precision)] = size
        field = field or name
    if field is None:
        return None
    return WorkerMemory(WORKER_RUNTIME_BYTES + sum(sizes.values()), field, fix)


def engine_in_process(e: EngineConfig) -> Any:
    """Engine ``e`` in this process, set up the first time it is asked for."""
    from recaption.engines import make_engine

    key = repr(e)
    if key not in _ENGINES:
        engine = make_engine(e)
        engine.setup()
        _ENGINES[key] = engine
    return _ENGINES[key]


class InTaskCaptions:
    """The ``short`` or ``detailed`` caption stage as a plain stage of a partition task: the
    actor's code (:class:`recaption.stage.CaptionStage`: gates, retries, reasons) on this
    process's engine. ``memory``: what a worker holding its model takes
    (``engine.worker_memory``)."""

    def __init__(
        self, kind: str, subset: Any, prompts: PromptConfig, memory: WorkerMemory | None = None
    ):
        self.stage = CaptionStage(kind, subset, prompts)
        self.name = self.stage.name
        self.memory = memory

    def __call__(self, batch: pa.Table) -> pa.Table:
        if self.stage.engine is None:
            self.stage.engine = engine_in_process(self.stage.subset.engine)
        return self.stage(batch)
