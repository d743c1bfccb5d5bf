"""Clip captions inside the raw-video job's partition tasks, for engines that run on the CPU.

A Ray Data actor pool (:class:`video_prep.clip_captions.ClipCaptionStage`) suits a model on a
GPU (vLLM, transformers on CUDA): one engine serves every partition. For the transformers engine
on CPU it was a fixed cost larger than the work: the pool
started, its actor imported torch and transformers and loaded the model (8-10 s on 2 cores)
while the 24 captions of the benchmark's 10-minute video took 0.8 s, and every clip's frames
went to ``_work/`` to be read back by the actor and again by the writing pass.

Here the captions are one more stage of the partition task that decodes the video: the clip
rows never leave the process. The engine is loaded once per worker process and kept for the
next task (:func:`engines_of`); its load starts in a thread when the task's first video
arrives (:class:`StartCaptionModel`), so it overlaps ffmpeg's decode of that video, and the
captions stage waits only for what is left (:class:`WaitCaptionModel`; the job's
``timings_s.caption_model`` says how long that was). Gates, retries and reasons are the
actor's own (the same :class:`ClipCaptionStage` code answers the rows).

Clips whose frames wait in a FrameStore (:mod:`video_prep.raw_frames`; both paths) get only the
frames the model sees read for each call, ``group`` clips at a time (:class:`StoredFrames`).

Each worker process that runs partitions holds its own copy of the model (N per node for N
CPUs): right for the small models one captions with on CPU; for a larger one, give the engine
``num_gpus`` (or use vLLM), which keeps the actor pool, or serve it (below). On local
processes only as many workers start as fit in memory (:func:`worker_memory`); on Ray each
task asks for that much memory (``StartCaptionModel.memory``; :mod:`engine.worker_memory`).

An OpenAI-compatible server's engine runs here too: it holds no model, only a connection pool,
so it costs a worker nothing to set up, and the job needs no Ray (local worker processes run
it). Its ``concurrency`` (requests in flight) is then per worker process.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

import pyarrow as pa

from engine.worker_memory import WorkerMemory
from recaption.engines.placement import runs_in_tasks
from recaption.in_task import engines_memory
from video_prep.clip_captions import ClipCaptionStage
from video_prep.frames import uniform_indices
from video_prep.raw_config import ClipCaptionsConfig
from video_prep.raw_frames import FrameStore

log = logging.getLogger(__name__)

#: per worker process: the captions config's engines, loaded (or loading) in a thread
_ENGINES: dict[str, Future] = {}
_ENGINES_LOCK = threading.Lock()


def in_task(cfg: ClipCaptionsConfig) -> bool:
    """Whether the captions run inside the partition tasks: ``captions.run_in`` says so, or,
    when it is ``auto``, every enabled kind's engine can (transformers on the CPU, or an
    OpenAI-compatible server whose model lives in the server, so an actor pool would add its
    passes and nothing else: :func:`recaption.engines.placement.runs_in_tasks`)."""
    if cfg.run_in != "auto":
        return cfg.run_in == "tasks"
    return all(runs_in_tasks(getattr(cfg, kind).engine) for kind in cfg.kinds())


def worker_memory(cfg: ClipCaptionsConfig) -> WorkerMemory | None:
    """Memory one worker needs for the in-task transformers engines of ``cfg``
    (:func:`recaption.in_task.engines_memory`); None when no kind loads a model here."""
    engines = [(f"captions.{k}.engine.model", getattr(cfg, k).engine) for k in cfg.kinds()]
    fix = "caption from a server (engine.kind: openai, engine.base_url) or with a smaller model"
    return engines_memory(engines, fix)


def _key(cfg: ClipCaptionsConfig) -> str:
    return repr([(k, getattr(cfg, k).engine) for k in cfg.kinds()])


def engines_of(cfg: ClipCaptionsConfig) -> Future:
    """The engines of ``cfg`` in this process, as a future: the first call starts loading them
    in a daemon thread, later calls (later videos, later tasks of the same worker) get the same
    future. A load that failed is tried again by the next call."""
    key = _key(cfg)
    with _ENGINES_LOCK:
        fut = _ENGINES.get(key)
        if fut is None or (fut.done() and fut.exception() is not None):
            fut = Future()
            _ENGINES[key] = fut
            threading.Thread(
                target=_load, args=(cfg, fut), name="caption-model", daemon=True
            ).start()
    return fut


def _load(cfg: ClipCaptionsConfig, fut: Future) -> None:
    try:
        t0 = time.perf_counter()
        stage = ClipCaptionStage(cfg)
        stage.setup()  # one engine per distinct engine config, as the actor does
        log.debug("caption model loaded in %.2f s", time.perf_counter() - t0)
        fut.set_result(stage.engines)
    except BaseException as exc:  # handed to whoever waits for the engines
        fut.set_exception(exc)


class StartCaptionModel:
    """First stage of a task: starts loading the caption engines (a no-op once loaded), so the
    load overlaps the decode of the task's first video. Passes its rows through. ``memory``:
    what a worker holding them takes (a task on Ray asks for that much: engine.worker_memory)."""

    name = "caption_model"

    def __init__(self, cfg: ClipCaptionsConfig):
        self.cfg = cfg
        self.memory = worker_memory(cfg)

    def __call__(self, batch: pa.Table) -> pa.Table:
        engines_of(self.cfg)
        return batch


class WaitCaptionModel:
    """Waits for the engines before the captions stage: its time is the part of the load the
    decode did not cover (0 once the process has them). A failed load raises here (the
    partition fails, as an actor whose setup failed would fail the pass)."""

    name = "caption_model"

    def __init__(self, cfg: ClipCaptionsConfig):
        self.cfg = cfg

    def __call__(self, batch: pa.Table) -> pa.Table:
        engines_of(self.cfg).result()
        return batch


class StoredFrames:
    """Reads, for a captions call, the frames the model gets of clips whose frames are in a
    FrameStore (``frames_at``), then puts the rows back as they were."""

    cfg: ClipCaptionsConfig

    def _caption(self, caption: Callable[[pa.Table], pa.Table], rows: pa.Table) -> pa.Table:
        """``caption(rows)`` with stored clips' frames read for the call: just those the model
        sees (and their timestamps); the rows come back as they were, frames left in the store."""
        if "frames_at" not in rows.column_names or rows["frames_at"].null_count == len(rows):
            return caption(rows)
        frames, stamps = self._model_inputs(rows)
        fi, ti = rows.schema.get_field_index("frames"), rows.schema.get_field_index("timestamps")
        out = caption(rows.set_column(fi, "frames", frames).set_column(ti, "timestamps", stamps))
        for name in ("frames", "timestamps"):
            out = out.set_column(out.schema.get_field_index(name), name, rows[name])
        return out

    def _model_inputs(self, rows: pa.Table) -> tuple[pa.Array, pa.Array]:
        """Each stored clip's frames as the model gets them (``captions.max_frames`` of them,
        uniformly: what ``model_frames`` would pick from all of them) and their times."""
        frames, stamps = [], []
        stores: dict[str, FrameStore] = {}
        try:
            for at, idx, ts, fr in zip(
                rows["frames_at"].to_pylist(),
                rows["indices"].to_pylist(),
                rows["timestamps"].to_pylist(),
                rows["frames"].to_pylist(),
                strict=True,
            ):
                if not at:
                    frames.append(fr)
                    stamps.append(ts)
                    continue
                if at not in stores:
                    stores[at] = FrameStore.open(at)
                pick = uniform_indices(len(idx), self.cfg.max_frames)
                frames.append(stores[at].frames([idx[i] for i in pick]))
                stamps.append([ts[i] for i in pick])
        finally:
            for store in stores.values():
                store.close()
        return (
            pa.array(frames, rows.schema.field("frames").type),
            pa.array(stamps, rows.schema.field("timestamps").type),
        )


class InTaskClipCaptions(StoredFrames):
    """The clip captions stage of a partition task: the actor's code on this process's engines,
    ``group`` clips at a time (the engine decodes a call's frames all at once: a long video's
    clips in one call would hold all their frames decoded)."""

    name = "clip_captions"

    def __init__(self, cfg: ClipCaptionsConfig, group: int | None = None):
        self.cfg = cfg
        self.group = group or max(getattr(cfg, k).engine.batch_size for k in cfg.kinds())

    def __call__(self, batch: pa.Table) -> pa.Table:
        stage = ClipCaptionStage(self.cfg)
        stage.engines = engines_of(self.cfg).result()
        parts = [
            self._caption(stage, batch.slice(start, self.group))
            for start in range(0, batch.num_rows, self.group)
        ]
        return pa.concat_tables(parts) if parts else batch


class StoredClipCaptionStage(StoredFrames, ClipCaptionStage):
    """The actor pool's captions stage (three passes) over clip rows whose frames are in their
    videos' FrameStores: ``group`` clips' model frames read at a time, not a partition's."""

    def __init__(self, cfg: ClipCaptionsConfig, group: int | None = None):
        super().__init__(cfg)
        self.group = group or max(getattr(cfg, k).engine.batch_size for k in cfg.kinds())

    def __call__(self, batch: pa.Table) -> pa.Table:
        caption = super().__call__  # the actor's own stage, on this batch's slices
        parts = [
            self._caption(caption, batch.slice(start, self.group))
            for start in range(0, batch.num_rows, self.group)
        ]
        return pa.concat_tables(parts) if parts else batch
