"""The ``import`` job: a public dataset's annotations (+ media) in, a shard set per modality out.

    OUT/_work/             the plan (and a JSON list rewritten as JSONL), done markers (resume)
    OUT/{image,video,text} shards/, ledger/, stats.json, report.html and dataset.json (last)

One pass of partition tasks (the engine's runner): each partition's records are checked, their
media read, images decoded with curation's caps and videos sampled at 1 fps with the video job's
sampler, and written straight into the partition's own tars of each modality's set, in the
worker. A hub table first has its rows hashed for exact duplicates by a pass of its own
(``ingest.table_dups``), so the driver never reads a row's image bytes. A killed run resumes
at the first unfinished partition; names come from the partition, so the result is the same
files.
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

from engine.finish import Finish, SetName, Tally, set_metas
from engine.job import JobRun, read_stats, run_job, shard_list, sum_timings
from engine.partitions import Partition
from engine.runner import run_partitions
from engine.workdir import WorkDir
from ingest.config import ImportConfig
from ingest.sources import count_records, list_import_partitions, load_import_partition
from ingest.stages import import_stages
from ingest.table_dups import find_table_duplicates
from ingest.write import ImportShards
from manifests.configs import config_hash

log = logging.getLogger(__name__)

#: records per chunk inside a partition task when videos are sampled (their frames are held
#: until the chunk is written)
VIDEO_CHUNK_ROWS = 4


def finalize(cfg: ImportConfig, run: JobRun, metas: dict[int, dict]) -> dict:
    """Each modality's stats.json and dataset.json, from the partitions' metadata."""
    finish, docs = Finish.of(run), {}
    for m in cfg.modalities:
        per_part = set_metas(metas, m)
        tally = Tally.of(per_part, ("reasons", "fixes"), ("samples", "frames", "images"))
        head = {"modality": m, "format": cfg.input.format}
        stats = finish.stats(tally, sum_timings(metas), head)
        name = SetName(f"{cfg.name}-{m}", m, f"import_{cfg.input.format}", config_hash(cfg))
        folder = Path(cfg.output) / m
        docs[m] = finish.write(folder, stats, name, shard_list(per_part), f"import {m}")
    return docs


def _report(folder: Path) -> None:
    from ingest.report import write_import_report

    write_import_report(folder)


class ImportJob:
    """The import job for ``engine.job.run_job``: one pass that checks, reads and writes."""

    name = "import"
    help = "import LLaVA / VideoLLaMA3 / text / hub-parquet data as shard sets"
    unit = "records"
    config_class = ImportConfig

    def inputs(self, cfg: ImportConfig) -> dict[str, tuple[str, str]]:
        found = {"annotations": ("input.annotations", cfg.input.annotations)}
        if cfg.input.media:
            found["media"] = ("input.media", cfg.input.media)
        return found

    def outputs(self, cfg: ImportConfig) -> dict[str, Path]:
        return {m: Path(cfg.output) / m for m in cfg.modalities}

    def config_hash(self, cfg: ImportConfig, blank: tuple[str, ...] = ()) -> str:
        return config_hash(cfg, blank=blank)

    def measure(self, cfg: ImportConfig) -> dict:
        stats = [read_stats(d) for d in self.outputs(cfg).values()]
        return {
            "unit": "records",
            "inputs": stats[0]["inputs"],
            "outputs": sum(s["samples"] for s in stats),
            "wall_s": stats[0]["wall_s"],
        }

    def partitions(self, cfg: ImportConfig) -> list[Partition]:
        return list_import_partitions(cfg)

    def needs_ray(self, cfg: ImportConfig) -> bool:
        return False  # one pass of plain tasks: check, read, decode, write

    def count_inputs(self, cfg: ImportConfig) -> int | None:
        return count_records(cfg)

    def report(self, out_dir: Path) -> None:
        _report(out_dir)

    def run(self, run: JobRun) -> dict[str, dict]:
        cfg = run.cfg
        if cfg.input.format == "parquet" and cfg.input.dedupe:
            found = find_table_duplicates(cfg, run.parts, run.work_root, run.progress)
            if found >= 0:
                log.info("import: %d exact duplicate rows across the table", found)
        metas = run_partitions(
            WorkDir(run.work_root / "import"),
            run.parts,
            partial(load_import_partition, cfg=cfg),
            import_stages(cfg),
            sink=ImportShards(cfg),
            progress=run.progress,
            unit="records",
            chunk_rows=VIDEO_CHUNK_ROWS if "video" in cfg.modalities else 64,
        )
        return finalize(cfg, run, metas)


def run_import(cfg: ImportConfig, *, restart: bool = False, progress: bool = True) -> dict:
    """Run (or finish) an import; returns ``{modality: dataset.json}``."""
    return run_job(ImportJob(), cfg, restart=restart, progress=progress)
