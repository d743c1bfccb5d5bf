"""The ``curate`` job: a raw image pool in, a curated WebDataset shard set out.

Score first (passes of stages, in parallel, resumable per partition), select second (global
steps: top-fraction thresholds, k-means balancing, each recorded as a drop list), write last:
every partition writes its own shards, ledger part and embeddings in the worker that holds it
(``curation.write``). A job with no model stage and no global step (the first stage alone)
writes its shards in its one pass, keeping no second copy of the bytes. The driver assembles
``stats.json`` and ``dataset.json`` (the marker that the shard set is complete) from the
partitions' metadata.
"""

from __future__ import annotations

import json
import logging
from functools import partial
from pathlib import Path

from curation.config import CurateConfig
from curation.passes import FIRST_PASS_ONLY, Drops, LoadPrevious, top_fraction
from curation.pipeline import build_passes, clip_embed_kw, stage_names, thresholds
from curation.sources import count_inputs, list_partitions, load_partition
from curation.write import CuratedShards
from engine.finish import Finish, SetName, Tally
from engine.job import JobRun, local_path, read_stats, run_job, shard_list, sum_timings
from engine.partitions import Partition
from engine.runner import is_model_stage, run_partitions
from engine.workdir import WorkDir
from manifests.atomic import write_json
from manifests.configs import config_hash, merge

log = logging.getLogger(__name__)


def _write_report(out: Path) -> None:
    """After dataset.json (the report reads it); a rerun redoes it if a crash came between."""
    from curation.report import write_report

    write_report(out)


def _global_step(state_path: Path, state: dict, key: str, run) -> dict:
    """Run a global step once. ``run`` returns what to merge into the saved state, so a rerun
    after a crash reuses the result instead of redoing the step."""
    if key in state.get("done", []):
        return state
    state = merge(state, run())
    state["done"] = [*state.get("done", []), key]
    write_json(state_path, state)
    return state


def has_global_step(cfg: CurateConfig) -> bool:
    return bool(
        (cfg.aesthetic.enabled and cfg.aesthetic.keep_top_fraction)
        or (cfg.similarity.enabled and cfg.similarity.keep_top_fraction)
        or cfg.cluster.enabled
        or cfg.dedup.hashes
        or cfg.decontam.enabled
    )


class CurateJob:
    """The curate job for ``engine.job.run_job``."""

    name = "curate"
    help = "curate a raw image pool into a WebDataset shard set"
    unit = "images"
    config_class = CurateConfig

    def inputs(self, cfg: CurateConfig) -> dict[str, tuple[str, str]]:
        found = {"pool": ("input.path", cfg.input.path)}
        for label, dotted, enabled in (
            ("clip", "clip.model", cfg.clip.enabled),
            ("blip2", "caption.model", cfg.caption.enabled),
            ("aesthetic", "aesthetic.weights", cfg.aesthetic.enabled),
        ):
            section, name = dotted.split(".")
            if enabled and (path := local_path(getattr(getattr(cfg, section), name))):
                found[label] = (dotted, path)
        return found

    def outputs(self, cfg: CurateConfig) -> dict[str, Path]:
        return {cfg.shards.subset: Path(cfg.output)}

    def config_hash(self, cfg: CurateConfig, blank: tuple[str, ...] = ()) -> str:
        return config_hash(cfg, blank=blank)

    def measure(self, cfg: CurateConfig) -> dict:
        s = read_stats(Path(cfg.output))
        return {
            "unit": "images",
            "inputs": s["inputs"],
            "outputs": s["kept"],
            "wall_s": s["wall_s"],
        }

    def partitions(self, cfg: CurateConfig) -> list[Partition]:
        return list_partitions(cfg.input)

    def needs_ray(self, cfg: CurateConfig) -> bool:
        return any(is_model_stage(s) for p in build_passes(cfg) for s in p.stages)

    def count_inputs(self, cfg: CurateConfig) -> int | None:
        return count_inputs(cfg.input)

    def report(self, out_dir: Path) -> None:
        _write_report(out_dir)

    def run(self, run: JobRun) -> dict[str, dict]:
        cfg, work_root, parts = run.cfg, run.work_root, run.parts
        passes = build_passes(cfg)
        write = WorkDir(work_root / "write")
        clusters = WorkDir(work_root / "assign") if cfg.cluster.enabled else None
        sink = CuratedShards(
            run.out,
            cfg.shards.subset,
            cfg.shards.max_count,
            cfg.shards.max_bytes,
            cfg.clip.embeddings_dtype,
            clusters,
        )
        load = partial(load_partition, cfg=cfg.input)
        if cfg.prefilter.enabled:  # pool-wide, before any download: dropped rows are never fetched
            load = prefiltered(cfg, work_root, parts, load)
        one_pass = len(passes) == 1 and not any(map(is_model_stage, passes[0].stages))
        if one_pass and not has_global_step(cfg):
            # the first stage alone: each partition goes straight into its shards
            metas = run_partitions(
                write,
                parts,
                load,
                passes[0].stages,
                sink=sink,
                progress=run.progress,
                unit="images",
            )
            return {cfg.shards.subset: finalize(cfg, run, metas, [], {})}
        scored, state = self._score_and_select(run, passes, load)
        last, base, drops = scored
        metas = run_partitions(
            write,
            parts,
            LoadPrevious(last, base, drops),
            sink=sink,
            progress=run.progress,
            unit="images",
        )
        pass_metas = [WorkDir(work_root / p.name) for p in passes]
        return {
            cfg.shards.subset: finalize(
                cfg,
                run,
                metas,
                [{q.index: w.meta(q.index) for q in parts} for w in pass_metas],
                state,
            )
        }

    def _score_and_select(self, run: JobRun, passes, load):
        """The scoring passes and the global steps between them; their decisions are drop lists
        that the writing pass applies as it reads each partition."""
        cfg, work_root, parts = run.cfg, run.work_root, run.parts
        drops = Drops(work_root / "drops")
        state_path = work_root / "global.json"
        state = json.loads(state_path.read_text()) if state_path.is_file() else {}
        base = last = WorkDir(work_root / passes[0].name)
        run_partitions(base, parts, load, passes[0].stages, progress=run.progress, unit="images")

        def keep_top(column: str, fraction: float):
            def step() -> dict:
                t = top_fraction(last, base, drops, parts, column, fraction, column)
                return {} if t is None else {"thresholds": {column: [t]}}

            return step

        if cfg.dedup.hashes:  # before any top fraction: duplicates would count twice
            from curation.dedup import dedup_step

            state = _global_step(
                state_path,
                state,
                "dedup",
                lambda: {"dedup": dedup_step(last, base, drops, parts, cfg.dedup)},
            )
        if cfg.decontam.enabled:  # copies of evaluation images, named in eval_match
            from curation.decontam import decontam_step

            clip_kw = clip_embed_kw(cfg)
            state = _global_step(
                state_path,
                state,
                "decontam",
                lambda: {
                    "decontam": decontam_step(last, base, drops, parts, cfg.decontam, clip_kw)
                },
            )
        if cfg.aesthetic.enabled and cfg.aesthetic.keep_top_fraction:
            state = _global_step(
                state_path,
                state,
                "aesthetic_top",
                keep_top("aesthetic", cfg.aesthetic.keep_top_fraction),
            )
        for p in passes[1:]:
            work = WorkDir(work_root / p.name)
            run_partitions(
                work,
                parts,
                LoadPrevious(last, base, drops),
                p.stages,
                progress=run.progress,
                unit="images",
                drop_columns=FIRST_PASS_ONLY,
            )
            last = work
        if cfg.similarity.enabled and cfg.similarity.keep_top_fraction:
            state = _global_step(
                state_path,
                state,
                "clip_sim_top",
                keep_top("clip_sim", cfg.similarity.keep_top_fraction),
            )
        if cfg.cluster.enabled:
            from curation.balance import cluster_and_balance

            state = _global_step(
                state_path,
                state,
                "cluster",
                lambda: {
                    "clusters": cluster_and_balance(
                        last, base, drops, parts, cfg.cluster, run.out, work_root, run.progress
                    )
                },
            )
        if cfg.dedup.semantic:  # inside the clusters the balanced selection used
            from curation.balance import CLUSTER_TABLE
            from curation.semdedup import semantic_step

            t = cfg.dedup.semantic_threshold
            clusters = work_root / CLUSTER_TABLE
            state = _global_step(
                state_path,
                state,
                "dedup_semantic",
                lambda: {
                    "dedup": semantic_step(last, base, drops, parts, clusters, t),
                },
            )
        return (last, base, drops), state


def prefiltered(cfg: CurateConfig, work_root: Path, parts: list[Partition], load):
    """The loader with the prefilter's pool-wide decisions marked on (the step runs once)."""
    from curation.prefilter import prefilter_pool
    from curation.stages.prefilter_marks import PrefilterMarks

    work = work_root / "prefilter"
    result = prefilter_pool(parts, cfg.input.url_column, cfg.prefilter, work)
    return PrefilterMarks(load, work, result)


def finalize(
    cfg: CurateConfig,
    run: JobRun,
    metas: dict[int, dict],
    pass_metas: list[dict[int, dict]],
    global_stats: dict,
) -> dict:
    """stats.json and dataset.json, from the partitions' metadata alone."""
    own = {
        "stages": stage_names(cfg),
        "thresholds": {**thresholds(cfg), **global_stats.get("thresholds", {})},
    }
    if "clusters" in global_stats:
        own["clusters"] = global_stats["clusters"]
    prefiltered_rows = run.work_root / "prefilter" / "result.json"
    if prefiltered_rows.is_file():  # rows dropped before download, per reason
        own["prefilter"] = json.loads(prefiltered_rows.read_text())["counts"]
    for step in ("dedup", "decontam"):  # duplicates, copies of evaluation images dropped
        if step in global_stats:
            own[step] = global_stats[step]
    finish = Finish.of(run)
    # the write pass records no drop reasons (the ledger has them): counts by status only
    stats = finish.stats(Tally.of(metas, counters=()), sum_timings(*pass_metas, metas), extra=own)
    name = SetName(cfg.name, "image", "curated_images", config_hash(cfg))
    return finish.write(run.out, stats, name, shard_list(metas), "curate")


def curate(cfg: CurateConfig, *, restart: bool = False, progress: bool = True) -> dict:
    """Run (or finish) the curation job; returns the shard set's ``dataset.json``."""
    docs = run_job(CurateJob(), cfg, restart=restart, progress=progress)
    return docs[cfg.shards.subset]
