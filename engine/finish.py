"""A job's finish: each shard set's ``stats.json`` and ``dataset.json`` from the done markers.

Every job ends the same way: its writing pass left one metadata dict per partition (counts by
status, drop reasons, per-stage seconds, the partition's shards); the driver adds them up into
the set's ``stats.json`` and writes ``dataset.json`` last (its presence says the set is
complete). What differs between jobs is only which counters and totals their sink records and a
few fields of their own, so the adding up and the common fields live here once:

    finish = Finish.of(run)
    for name, folder in outputs:
        metas = set_metas(pass_metas, name)              # a sink writing several sets
        t = Tally.of(metas, counters=("reasons",), totals=("samples",))
        stats = finish.stats(t, sum_timings(pass_metas), head={"task": name})
        docs[name] = finish.write(folder, stats, SetName(...), shard_list(metas), label)
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from engine.job import JobRun
from engine.progress import status as show_status
from engine.workdir import pass_timings
from manifests.atomic import write_json
from manifests.dataset import write_dataset_json
from manifests.schema import STATUSES

STATS_JSON = "stats.json"


def set_metas(metas: dict[int, dict], name: str) -> dict[int, dict]:
    """One shard set's part of each partition's metadata, from a sink that writes several sets
    (``{"sets": {name: {...}}}``); a partition that held no rows has none."""
    return {p: m["sets"][name] for p, m in metas.items() if "sets" in m}


@dataclass
class Tally:
    """What a shard set's partitions did, added up: rows by status (every status, zeros too),
    named counters (reason -> rows: ``reasons``, ``fixes``, ``attempts``...) and named totals
    (``samples``, ``frames``...)."""

    counts: dict[str, int]
    counters: dict[str, dict[str, int]]
    totals: dict[str, int | float]

    @classmethod
    def of(
        cls,
        metas: dict[int, dict],
        counters: Iterable[str] = ("reasons",),
        totals: Iterable[str] = (),
    ) -> Tally:
        """Sum ``metas`` (partition -> metadata); a key a partition lacks counts as nothing (a
        partition without rows records only its row count)."""
        counts: Counter = Counter(dict.fromkeys(STATUSES, 0))
        sums: dict[str, Counter] = {k: Counter() for k in counters}
        added: dict[str, int | float] = dict.fromkeys(totals, 0)
        for meta in metas.values():
            counts.update(meta.get("counts", {}))
            for k, c in sums.items():
                c.update(meta.get(k, {}))
            for k in added:
                added[k] += meta.get(k, 0)
        return cls(dict(counts), {k: dict(c) for k, c in sums.items()}, added)

    @property
    def inputs(self) -> int:
        """Every input has a ledger row with one status, so the statuses add up to the inputs."""
        return sum(self.counts.values())


@dataclass(frozen=True)
class SetName:
    """What ``dataset.json`` says a shard set is, and the hash of the config that decided it."""

    name: str
    modality: str
    task: str
    config_hash: str


@dataclass
class Finish:
    """One run's end, shared by every shard set it writes: the clock stopped once (each set of
    a run has the same ``wall_s``), and where the time went per pass (``passes_s``: each pass's
    ``_work/{pass}/pass.json`` of this run)."""

    run: JobRun
    wall_s: float
    passes_s: dict[str, dict]

    @classmethod
    def of(
        cls,
        run: JobRun,
        passes: Iterable[str] | None = None,
        since: float | None = None,
    ) -> Finish:
        """The finish of ``run`` now. ``passes``: only these passes' timings (a job whose sets
        come from passes of their own, as recaption's subsets do); ``since``: when the work of
        the set began (``time.time()``), when it is not the run's start."""
        timings = pass_timings(run.work_root)
        if passes is not None:
            timings = {p: timings[p] for p in passes if p in timings}
        wall = time.time() - (run.started if since is None else since)
        return cls(run, wall, timings)

    def stats(
        self,
        tally: Tally,
        timings_s: dict[str, float],
        head: dict | None = None,
        extra: dict | None = None,
    ) -> dict:
        """A set's stats: ``head`` (what the set is: its task, modality...), the inputs and
        their counts, the tally's totals and counters, the job's ``extra`` fields, then the
        common clock fields every job's stats carry."""
        return {
            **(head or {}),
            "inputs": tally.inputs,
            **tally.counts,
            **tally.totals,
            **tally.counters,
            **(extra or {}),
            "timings_s": timings_s,
            "wall_s": round(self.wall_s, 3),
            "ray_start_s": round(self.run.ray_start_s, 3),
            # local worker processes (engine.local_pool), None on Ray
            "workers": self.run.pool.workers if self.run.pool is not None else None,
            "partitions": len(self.run.parts),
            "passes_s": self.passes_s,
        }

    def write(
        self, folder: Path, stats: dict, name: SetName, shards: list[dict], label: str
    ) -> dict:
        """``stats.json``, then ``dataset.json`` (last: the set is complete); returns the
        latter. ``label`` names the set in the status line, the job's name first ("video-raw
        caption"): ``stats`` gets the job's name (``JobRun.job``; else the label's first word)
        as ``job`` (unless it has one), so ``vl3data report`` knows whose report to draw. The
        report is drawn by ``engine.job.run_job``, while Ray stops."""
        show_status(f"{label}: writing stats.json, dataset.json and the report")
        stats.setdefault("job", self.run.job or label.split()[0])
        write_json(Path(folder) / STATS_JSON, stats)
        return write_dataset_json(
            folder,
            name=name.name,
            modality=name.modality,
            task=name.task,
            shards=shards,
            config=dataclasses.asdict(self.run.cfg),
            config_hash=name.config_hash,
            extra={"inputs": stats["inputs"], "ledger_parts": len(self.run.parts)},
        )
