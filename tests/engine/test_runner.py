"""The runner: stages with ``setup()`` run as actors (set up once, never at construction)."""

from __future__ import annotations

import os
from functools import partial

import numpy as np
import pyarrow as pa
import pytest

from curation.config import InputConfig
from curation.sources import list_partitions, load_partition
from curation.stages.decode import Decode, Probe
from curation.stages.shape import ShapeFilter
from engine.runner import run_partitions
from engine.workdir import WorkDir
from manifests.marks import alive, set_column


class MeanBrightness:
    """A stateful stage of the model-stage shape: its 'model' (a lookup table) loads in
    setup(), and the stage writes a score per live row."""

    name = "brightness"
    batch_size = 4
    concurrency = 1
    num_gpus = 0
    num_cpus = 1

    def __init__(self) -> None:
        self.table: np.ndarray | None = None
        self.setups = 0

    def setup(self) -> None:
        self.table = np.arange(256, dtype=np.float64) / 255.0
        self.setups += 1

    def __call__(self, batch: pa.Table) -> pa.Table:
        import io

        from PIL import Image

        assert self.table is not None, "setup() must run before the first batch"
        live = alive(batch)
        scores = []
        for i, data in enumerate(batch["image"].to_pylist()):
            if not live[i] or not data:
                scores.append(None)
                continue
            gray = np.asarray(Image.open(io.BytesIO(data)).convert("L"))
            scores.append(float(self.table[gray].mean()))
        batch = set_column(batch, "brightness", pa.array(scores, pa.float32()))
        return set_column(batch, "setups", pa.array([f"{os.getpid()}:{self.setups}"] * len(scores)))


def test_actor_stage_is_set_up_once_per_actor(tmp_path, demo_pool, ray_local):
    pool, expected = demo_pool
    stage = MeanBrightness()
    assert stage.table is None  # constructing a stage loads nothing
    cfg = InputConfig(path=str(pool), partition_size=6)
    work = WorkDir(tmp_path / "work")
    parts = list_partitions(cfg)
    stages = [Probe(), ShapeFilter(), Decode(), stage]  # a model stage after the first stage
    run_partitions(work, parts, partial(load_partition, cfg=cfg), stages, progress=False)
    rows = pa.concat_tables([work.read_partition(p.index) for p in parts]).to_pylist()
    assert len(rows) == len(expected)
    assert {r["setups"] for r in rows} == {rows[0]["setups"]}  # one actor, set up once
    assert rows[0]["setups"].endswith(":1")
    scored = next(r for r in rows if r["source_key"] == "photos/coffee.jpg")
    assert 0.0 < scored["brightness"] < 1.0
    assert all(r["brightness"] is None for r in rows if r["status"] != "kept")
    assert {(r["source_key"], r["status"], r["reason"]) for r in rows} == {
        (k, *v) for k, v in expected.items()
    }
    assert stage.setups == 0  # the driver's copy was never set up: only the actor's
    timings = work.timings(parts[0].index)
    assert timings["brightness"] > 0


def test_actor_pools_that_take_every_cpu_are_refused(tmp_path, demo_pool, ray_local):
    """Ray Data would wait forever for a CPU to run the loading tasks: fail fast instead."""
    import pytest

    pool, _ = demo_pool
    stage = MeanBrightness()
    stage.num_cpus = 2  # the session's Ray has 2 CPUs
    cfg = InputConfig(path=str(pool), partition_size=6)
    with pytest.raises(ValueError, match=r"brightness.*leaving none for the tasks"):
        run_partitions(
            WorkDir(tmp_path / "w"),
            list_partitions(cfg),
            partial(load_partition, cfg=cfg),
            [stage],
            progress=False,
        )


class FailsOnPartition:
    """A plain stage that raises on the rows of one partition: a bug, not bad input."""

    name = "fails"

    def __init__(self, partition: int) -> None:
        self.partition = partition

    def __call__(self, batch: pa.Table) -> pa.Table:
        if self.partition in batch["partition"].to_pylist():
            raise ZeroDivisionError("a bug in a stage\nwith a second line")
        return batch


def test_a_failing_partition_is_one_line_and_the_others_finish(tmp_path, demo_pool, ray_local):
    pool, _ = demo_pool
    cfg = InputConfig(path=str(pool), partition_size=6)
    parts = list_partitions(cfg)
    work = WorkDir(tmp_path / "work")
    load = partial(load_partition, cfg=cfg)
    with pytest.raises(RuntimeError) as err:
        run_partitions(work, parts, load, [FailsOnPartition(1)], progress=False)
    assert str(err.value) == (
        "1 partition(s) failed (1: ZeroDivisionError: a bug in a stage); rerun to retry them"
    )
    assert [p.index for p in parts if work.is_done(p.index)] == [
        p.index for p in parts if p.index != 1
    ]


class AssignedMemory:
    """A plain stage that declares what a worker running it holds (as the raw-video job's
    in-task captions do) and records what Ray assigned the task it runs in."""

    name = "assigned_memory"

    def __init__(self, need):
        self.memory = need

    def __call__(self, batch: pa.Table) -> pa.Table:
        import ray

        got = ray.get_runtime_context().get_assigned_resources().get("memory", 0.0)
        return set_column(batch, "assigned_memory", pa.array([got] * batch.num_rows))


def test_a_task_that_holds_a_model_asks_ray_for_its_memory(tmp_path, demo_pool, ray_local):
    import ray

    from engine.worker_memory import WorkerMemory
    from manifests.configs import ConfigError

    pool, expected = demo_pool
    cfg = InputConfig(path=str(pool), partition_size=12)
    parts = list_partitions(cfg)
    load = partial(load_partition, cfg=cfg)
    need = WorkerMemory(256 << 20, "captions.short.engine.model", "use a smaller model")
    work = WorkDir(tmp_path / "work")
    run_partitions(work, parts, load, [AssignedMemory(need)], progress=False)
    rows = pa.concat_tables([work.read_partition(p.index) for p in parts]).to_pylist()
    assert len(rows) == len(expected)
    assert {r["assigned_memory"] for r in rows} == {float(256 << 20)}
    # more than any node has: refused before a task is queued (Ray would wait for ever)
    largest = max(n["Resources"].get("memory", 0) for n in ray.nodes() if n["Alive"])
    huge = WorkerMemory(int(largest) + (1 << 30), need.field, need.fix)
    other = WorkDir(tmp_path / "refused")
    with pytest.raises(ConfigError, match=r"captions\.short\.engine\.model") as err:
        run_partitions(other, parts, load, [AssignedMemory(huge)], progress=False)
    assert "largest Ray node offers" in str(err.value) and "smaller model" in str(err.value)
    assert not any(other.is_done(p.index) for p in parts)
