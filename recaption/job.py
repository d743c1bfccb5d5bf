"""The ``recaption`` job: a curated shard set in; VL3-Syn7M-short and -detailed out.

    OUT/_work/{short,detailed}/   captioned pieces per partition (no image bytes), done markers
    OUT/_work/write-{subset}/     done markers of the writing pass, with each partition's shards
    OUT/short/, OUT/detailed/     shards/, ledger/, stats.json, report.html, dataset.json

Each subset is one pass of the engine's runner (Ray Data; the caption engine as an actor pool),
so the short and detailed models can have different hardware, and a killed run resumes at the
first unfinished partition of the pass it was in. Then a parallel writing pass: each partition
joins its captions with its images, read again from the input shards (the pieces keep no copy of
the bytes), and writes its own tars and ledger part in the worker.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections import Counter
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pyarrow as pa

from engine.finish import Finish, SetName, Tally
from engine.job import JobRun, local_path, read_stats, run_job, shard_list, sum_timings
from engine.partitions import Partition
from engine.runner import CHUNK_ROWS, run_partitions
from engine.workdir import WorkDir
from engine.worker_memory import WorkerMemory
from manifests import ledger
from manifests.configs import RUN_FIELDS, config_hash
from manifests.dataset import read_dataset_json
from manifests.schema import ERROR, KEPT, STATUSES
from manifests.shards import ShardSetWriter, tar_samples
from recaption.config import RecaptionConfig
from recaption.in_task import InTaskCaptions, engines_memory
from recaption.stage import CaptionStage

log = logging.getLogger(__name__)

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
#: fields of the curated record that are about the image, carried into the new record
NOT_CARRIED = {"image", "conversations", "key"}


def recaption_hash(cfg: RecaptionConfig, blank: tuple[str, ...] = ()) -> str:
    """What decides the captions: where and how fast an engine runs does not."""
    cfg = copy.deepcopy(cfg)
    for kind in ("short", "detailed"):
        e = getattr(cfg, kind).engine
        e.concurrency, e.num_gpus, e.timeout_s, e.max_retries = 1, 0, 0.0, 0
        e.base_url, e.api_key = "", ""
    return config_hash(cfg, (*RUN_FIELDS, "plan_images", "run_in"), blank=blank)


def list_image_partitions(cfg: RecaptionConfig) -> list[Partition]:
    """Slices of the input's shards, ``partition_size`` samples each, in shard order."""
    src = Path(cfg.input.path)
    doc = read_dataset_json(src)
    parts, size = [], cfg.input.partition_size
    for shard in doc["shards"]:
        for skip in range(0, shard["samples"], size):
            spec = {
                "shard": shard["path"],
                "skip": skip,
                "take": min(size, shard["samples"] - skip),
            }
            parts.append(Partition(len(parts), "shard_slice", spec))
    return parts


def load_image_partition(part: Partition, root: str) -> pa.Table:
    """The images of one slice, as ledger rows (id = the curated sample's key)."""
    spec = part.spec
    rows: dict[str, list] = {k: [] for k in ("id", "source_key", "image", "ext", "text", "meta")}
    status, reason = [], []
    lo, hi = spec["skip"], spec["skip"] + spec["take"]

    def keep(ordinal: int, _key: str) -> bool | None:  # earlier samples' data is seeked past
        return None if ordinal >= hi else ordinal >= lo

    for sample in tar_samples(str(Path(root) / spec["shard"]), keep):
        key = sample["__key__"]
        ext = next((e for e in IMAGE_EXTS if e in sample), None)
        try:
            rec = json.loads(sample["json"]) if "json" in sample else {}
        except ValueError:
            rec = {}
        conv = rec.get("conversations") or []
        rows["id"].append(key)
        rows["source_key"].append(f"{spec['shard']}#{key}")
        rows["image"].append(sample[ext] if ext else None)
        rows["ext"].append(ext)
        rows["text"].append(conv[1]["value"] if len(conv) > 1 else None)
        rows["meta"].append(json.dumps({k: v for k, v in rec.items() if k not in NOT_CARRIED}))
        status.append(KEPT if ext else ERROR)
        reason.append(None if ext else "no_image")
    n = len(rows["id"])
    return pa.table(
        {
            "id": pa.array(rows["id"], pa.string()),
            "source": pa.array([f"recaption:{Path(root).name}"] * n, pa.string()),
            "source_key": pa.array(rows["source_key"], pa.string()),
            "partition": pa.array([part.index] * n, pa.int32()),
            "row": pa.array(range(n), pa.int32()),
            "status": pa.array(status, pa.string()),
            "stage": pa.array([None if r is None else "load" for r in reason], pa.string()),
            "reason": pa.array(reason, pa.string()),
            "image": pa.array(rows["image"], pa.binary()),
            "ext": pa.array(rows["ext"], pa.string()),
            "text": pa.array(rows["text"], pa.string()),
            "meta": pa.array(rows["meta"], pa.string()),
        }
    )


def training_record(row: dict, kind: str, model: str) -> dict:
    """DESIGN §5: the caption answers a rotated instruction; the curated scores ride along."""
    key, ext = row["id"], row["ext"]
    rec = {
        "key": key,
        "image": [f"{key}.{ext}"],
        "conversations": [
            {"from": "human", "value": "<image>\n" + row["instruction"]},
            {"from": "gpt", "value": row["caption"]},
        ],
        "subset": kind,
        "caption_model": model,
    }
    if row.get("meta"):
        curated = json.loads(row["meta"])
        rec["curated"] = curated
        for k in ("width", "height"):  # image size, as every image record carries it
            if k in curated:
                rec[k] = curated[k]
    return rec


class CaptionedWithImages:
    """Loader of the writing pass: a partition's captioned rows, their images read back from the
    input shards in row order."""

    def __init__(self, work: WorkDir, root: str):
        self.work, self.root = work, root

    def __call__(self, part: Partition) -> pa.Table:
        rows = self.work.read_partition(part.index)
        if rows is None:
            return pa.table({})
        images = load_image_partition(part, self.root)["image"]
        return rows.append_column("image", images.take(rows["row"]))


class CaptionShards:
    """Sink of a subset's writing pass: the partition's kept captions into its own tars."""

    def __init__(self, cfg: RecaptionConfig, kind: str):
        self.out, self.kind = Path(cfg.output) / kind, kind
        self.max_count, self.max_bytes = cfg.shards.max_count, cfg.shards.max_bytes
        self.model = getattr(cfg, kind).engine.model

    def write(self, part: Partition, chunks: Iterator[pa.Table]) -> dict:
        writer = ShardSetWriter(self.out, self.kind, self.max_count, self.max_bytes, part.index)
        counts: Counter = Counter(dict.fromkeys(STATUSES, 0))
        reasons: Counter = Counter()
        attempts: Counter = Counter()
        tokens = {"prompt": 0, "output": 0}
        gen_s = 0.0
        pieces = []
        for rows in chunks:
            shards, keys = [], []
            for row in rows.to_pylist():
                counts[row["status"]] += 1
                if row["reason"]:
                    reasons[row["reason"]] += 1
                if row["attempts"]:
                    attempts[str(row["attempts"])] += 1
                    tokens["prompt"] += row["prompt_tokens"] or 0
                    tokens["output"] += row["output_tokens"] or 0
                    gen_s += row["gen_s"] or 0.0
                if row["status"] != KEPT:
                    shards.append(None)
                    keys.append(None)
                    continue
                rec = training_record(row, self.kind, self.model)
                sample = {
                    "__key__": row["id"],
                    row["ext"]: row["image"],
                    "json": json.dumps(rec).encode(),
                }
                shards.append(writer.write(sample))
                keys.append(row["id"])
            rows = rows.append_column("shard", pa.array(shards, pa.string()))
            rows = rows.append_column("key", pa.array(keys, pa.string()))
            words = [len((c or "").split()) or None for c in rows["caption"].to_pylist()]
            pieces.append(ledger.to_ledger(rows.append_column("words", pa.array(words))))
        shards = writer.close()
        if pieces:
            ledger.write_part(self.out, part.index, pa.concat_tables(pieces))
        else:
            ledger.part_path(self.out, part.index).unlink(missing_ok=True)
        return {
            "counts": dict(counts),
            "reasons": dict(reasons),
            "attempts": dict(attempts),
            "tokens": tokens,
            "gen_s": gen_s,
            "shards": shards,
        }


def finalize_subset(
    cfg: RecaptionConfig,
    kind: str,
    run: JobRun,
    metas: tuple[dict[int, dict], dict[int, dict]],
    started: float,
) -> dict:
    """stats.json and dataset.json of one subset, from the partitions' metadata of its
    captioning and writing passes (``metas``); ``started``: when the subset's work began."""
    captioned, written = metas
    finish = Finish.of(run, passes=(kind, f"write-{kind}"), since=started)
    tally = Tally.of(written, ("reasons", "attempts", "tokens"))
    engine = getattr(cfg, kind).engine
    head = {"subset": kind, "model": engine.model, "engine": engine.kind}
    gen_s = sum(m.get("gen_s", 0.0) for m in written.values())
    stats = finish.stats(
        tally,
        sum_timings(captioned, written),  # the engine's time beside the write's
        head,
        caption_rates(tally.counters["attempts"], tally.counters["tokens"], gen_s),
    )
    name = SetName(f"{cfg.name}-{kind}", "image", f"caption_{kind}", recaption_hash(cfg))
    return finish.write(
        Path(cfg.output) / kind, stats, name, shard_list(written), f"recaption {kind}"
    )


def caption_rates(attempts: dict[str, int], tokens: dict[str, int], gen_s: float) -> dict:
    """The captioning's own stats: images by attempts needed, tokens, and the engine's rates
    (its time summed over workers: the rates are per worker)."""
    tokens = {"prompt": 0, "output": 0, **tokens}
    return {
        "attempts": {k: v for k, v in sorted(attempts.items(), key=lambda kv: int(kv[0]))},
        "tokens": tokens,
        "generation_s": round(gen_s, 3),
        "per_worker": {
            "images_per_s": round(sum(attempts.values()) / gen_s, 3) if gen_s else None,
            "prompt_tokens_per_s": round(tokens["prompt"] / gen_s, 1) if gen_s else None,
            "output_tokens_per_s": round(tokens["output"] / gen_s, 1) if gen_s else None,
        },
    }


def _report(out: Path) -> None:
    from recaption.report import write_recaption_report

    write_recaption_report(out)


class RecaptionJob:
    """The recaption job for ``engine.job.run_job``: one captioning pass and one writing pass
    per subset."""

    name = "recaption"
    help = "InternVL2 short and detailed captions of curated images"
    unit = "images"
    config_class = RecaptionConfig

    def inputs(self, cfg: RecaptionConfig) -> dict[str, tuple[str, str]]:
        found = {"curated": ("input.path", cfg.input.path)}
        for kind in cfg.subsets():
            if path := local_path(getattr(cfg, kind).engine.model):
                found[f"{kind}_model"] = (f"{kind}.engine.model", path)
        return found

    def outputs(self, cfg: RecaptionConfig) -> dict[str, Path]:
        return {k: Path(cfg.output) / k for k in cfg.subsets()}

    def config_hash(self, cfg: RecaptionConfig, blank: tuple[str, ...] = ()) -> str:
        return recaption_hash(cfg, blank)

    def measure(self, cfg: RecaptionConfig) -> dict:
        stats = {k: read_stats(d) for k, d in self.outputs(cfg).items()}
        first = next(iter(stats.values()))
        return {
            "unit": "images",
            "inputs": first["inputs"],
            "outputs": sum(s["kept"] for s in stats.values()),
            "wall_s": sum(s["wall_s"] for s in stats.values()),
            "per_subset": {k: s["kept"] for k, s in stats.items()},
        }

    def partitions(self, cfg: RecaptionConfig) -> list[Partition]:
        return list_image_partitions(cfg)

    def needs_ray(self, cfg: RecaptionConfig) -> bool:
        return not cfg.in_tasks()  # else the engines run in actor pools

    def worker_memory(self, cfg: RecaptionConfig) -> WorkerMemory | None:
        """What one local worker holds when the captions run in its tasks: its own copy of
        each transformers model, and torch (``engine.worker_memory``)."""
        if not cfg.in_tasks():
            return None
        engines = [(f"{k}.engine.model", getattr(cfg, k).engine) for k in cfg.subsets()]
        return engines_memory(
            engines, "caption from a server (engine.kind: openai) or with a smaller model"
        )

    def count_inputs(self, cfg: RecaptionConfig) -> int | None:
        try:
            return read_dataset_json(cfg.input.path)["samples"]
        except (FileNotFoundError, ValueError, KeyError):
            return None

    def report(self, out_dir: Path) -> None:
        _report(out_dir)

    def run(self, run: JobRun) -> dict[str, dict]:
        cfg, docs = run.cfg, {}
        memory = self.worker_memory(cfg)  # None unless the captions run in the tasks
        for kind in cfg.subsets():
            t0 = time.time()
            work = WorkDir(run.work_root / kind)
            subset = getattr(cfg, kind)
            if cfg.in_tasks():  # a whole partition per call, as the actor gets it
                stage = InTaskCaptions(kind, subset, cfg.prompts, memory)
                chunk = cfg.input.partition_size
            else:
                stage, chunk = CaptionStage(kind, subset, cfg.prompts), CHUNK_ROWS
            load = partial(load_image_partition, root=cfg.input.path)
            captioned = run_partitions(
                work,
                run.parts,
                load,
                [stage],
                progress=run.progress,
                unit="images",
                drop_columns=("image",),
                chunk_rows=chunk,
            )
            written = run_partitions(
                WorkDir(run.work_root / f"write-{kind}"),
                run.parts,
                CaptionedWithImages(work, cfg.input.path),
                sink=CaptionShards(cfg, kind),
                progress=run.progress,
                unit="images",
            )
            docs[kind] = finalize_subset(cfg, kind, run, (captioned, written), t0)
        return docs


def run_recaption(cfg: RecaptionConfig, *, restart: bool = False, progress: bool = True) -> dict:
    """Run (or finish) the job; returns ``{subset: dataset.json}``."""
    return run_job(RecaptionJob(), cfg, restart=restart, progress=progress)
