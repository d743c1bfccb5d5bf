"""The recaption job end to end on the tiny InternVL: both subsets from a curated shard set,
records that render through VideoLlama3Processor, failures in the ledger, resume after kill -9,
and the --plan estimate."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from manifests.configs import ConfigError, load_config
from manifests.dataset import read_dataset_json, shard_paths
from manifests.ledger import read_ledger
from manifests.shards import iter_samples
from recaption.config import RecaptionConfig
from recaption.job import run_recaption
from tests.cli import recaption_cmd, start_until_done

CONFIGS = ["configs/recaption_internvl2.yaml", "configs/models/recaption_tiny.yaml"]
ALL_REASONS = "[garbled,truncated,repetition,refusal,wrong_language,too_short]"
# an empty caption (EOS first) cannot be accepted: sampling gets it another try
RESAMPLE = "[{temperature: 1.0, max_new_tokens: 24}, {temperature: 1.0, max_new_tokens: 48}]"


@pytest.fixture(scope="module")
def curated(tmp_path_factory, demo_pool_master, ray_local) -> Path:
    """A real curated shard set: `vl3data curate` (no models) over the demo pool."""
    from curation.config import CurateConfig
    from curation.curate import curate

    root = tmp_path_factory.mktemp("curated")
    shutil.copytree(demo_pool_master[0], root / "pool")
    sets = [f"input.path={root / 'pool'}", f"output={root / 'out'}", "input.partition_size=8"]
    curate(load_config(CurateConfig, "configs/curate_local.yaml", sets), progress=False)
    return root / "out"


def config(curated: Path, out: Path, tiny_internvl: Path, *more: str) -> RecaptionConfig:
    sets = [
        f"input.path={curated}",
        f"output={out}",
        f"short.engine.model={tiny_internvl}",
        f"detailed.engine.model={tiny_internvl}",
        "input.partition_size=4",
        *more,
    ]
    return load_config(RecaptionConfig, CONFIGS, sets)


def curated_keys(curated: Path) -> list[str]:
    return [s["__key__"] for s in iter_samples(shard_paths(curated))]


@pytest.fixture(scope="module")
def accepting(curated, tiny_internvl, tmp_path_factory, ray_local):
    """A run whose gates let every caption of the random model through."""
    out = tmp_path_factory.mktemp("syn7m")
    cfg = config(
        curated,
        out,
        tiny_internvl,
        *(f"{k}.accept={ALL_REASONS}" for k in ("short", "detailed")),
        *(f"{k}.retry={RESAMPLE}" for k in ("short", "detailed")),
    )
    return out, run_recaption(cfg, progress=False)


def test_every_curated_image_gets_a_short_and_a_detailed_record(curated, accepting):
    """With every gate but ``empty`` accepted, each image gets a record in both subsets, unless
    the random model answered with nothing on every attempt (then the ledger says so)."""
    out, docs = accepting
    keys = curated_keys(curated)
    assert keys
    for kind in ("short", "detailed"):
        samples = list(iter_samples(shard_paths(out / kind)))
        ledger = {r["id"]: r for r in read_ledger(out / kind).to_pylist()}
        assert sorted(ledger) == sorted(keys)  # one ledger row per curated image
        written = {s["__key__"] for s in samples}
        for key, row in ledger.items():
            if key in written:
                assert row["status"] == "kept" and row["shard"]
            else:  # an empty caption cannot be accepted; it had all its attempts
                assert (row["reason"], row["attempts"]) == ("empty", 3), row
        assert written
        assert docs[kind]["samples"] == len(written) and docs[kind]["modality"] == "image"
        for s in samples:
            rec = json.loads(s["json"])
            ext = rec["image"][0].rsplit(".", 1)[1]
            assert s[ext][:2] == b"\xff\xd8" or ext != "jpg"  # the curated image bytes
            human, gpt = rec["conversations"]
            assert human["from"] == "human" and human["value"].startswith("<image>\n")
            assert gpt["from"] == "gpt" and gpt["value"].strip()
            assert rec["subset"] == kind
        instructions = {json.loads(s["json"])["conversations"][0]["value"] for s in samples}
        assert len(instructions) > 1  # a rotation, not one instruction for all
    short = {json.loads(s["json"])["key"]: s for s in iter_samples(shard_paths(out / "short"))}
    rec = json.loads(next(iter(short.values()))["json"])
    assert "curated" in rec  # the curated record's fields ride along


def test_records_render_through_videollama3_processor(accepting, tmp_path):
    from transformers import AutoProcessor

    from manifests.chat import IMAGE_PAD, processor_inputs
    from vl3data.tiny_models import write_tiny_videollama3_processor

    processor = AutoProcessor.from_pretrained(write_tiny_videollama3_processor(tmp_path / "p"))
    out, _ = accepting
    for kind in ("short", "detailed"):
        for sample in list(iter_samples(shard_paths(out / kind)))[:3]:
            rec = json.loads(sample["json"])
            batch = processor_inputs(rec, sample, processor)
            text = processor.tokenizer.decode(batch["input_ids"][0])
            instruction = rec["conversations"][0]["value"].removeprefix("<image>\n")
            assert text.startswith(f"<|im_start|>user\n{IMAGE_PAD}")
            assert f"{IMAGE_PAD}\n{instruction}<|im_end|>" in text
            n_pad = int((batch["input_ids"][0] == processor.image_token_id).sum())
            grid = batch["image_grid_thw"][0] if "image_grid_thw" in batch else None
            assert n_pad > 0 and (grid is None or n_pad == int(grid.prod()))


def test_strict_gates_put_failures_in_the_ledger(curated, tiny_internvl, tmp_path, ray_local):
    out = tmp_path / "strict"
    docs = run_recaption(config(curated, out, tiny_internvl), progress=False)
    n = len(curated_keys(curated))
    for kind in ("short", "detailed"):
        ledger = read_ledger(out / kind).to_pylist()
        stats = json.loads((out / kind / "stats.json").read_text())
        assert len(ledger) == stats["inputs"] == n
        kept = [r for r in ledger if r["status"] == "kept"]
        failed = [r for r in ledger if r["status"] != "kept"]
        assert len(kept) == docs[kind]["samples"] == stats["kept"]
        assert all(
            r["reason"]
            in ("garbled", "truncated", "repetition", "too_short", "wrong_language", "empty")
            for r in failed
        )
        assert sum(stats["reasons"].values()) == len(failed)
        assert all(r["attempts"] >= 1 and r["output_tokens"] > 0 for r in ledger)
        assert stats["per_worker"]["output_tokens_per_s"] > 0
        html = (out / kind / "report.html").read_text()
        for section in (
            "Caption lengths",
            "Throughput",
            "Kept captions",
            "Failed captions by gate",
        ):
            assert section in html
        if failed:
            assert failed[0]["reason"] in html
    # the detailed subset retries failures with its other sampling settings
    det = read_ledger(out / "detailed").to_pylist()
    retried = ("garbled", "truncated", "repetition", None)
    assert any(r["attempts"] == 2 for r in det if r["reason"] in retried)


def test_bad_input_fails_before_any_work(tmp_path, tiny_internvl):
    cfg = config(tmp_path / "nothing", tmp_path / "o", tiny_internvl)
    with pytest.raises(ConfigError, match=r"input\.path"):
        cfg.check_runnable()
    with pytest.raises(ConfigError, match="accept"):
        config(tmp_path, tmp_path / "o", tiny_internvl, "short.accept=[blurry]")


def test_plan_estimates_worker_hours(curated, tiny_internvl, tmp_path, capsys):
    """The command line in this process (``--plan`` captions here, with no Ray: a process of
    its own would only add its imports); the kill test runs the command in its own process."""
    from vl3data import cli

    sets = [
        f"short.engine.model={tiny_internvl}",
        f"detailed.engine.model={tiny_internvl}",
        "plan_images=4",
    ]
    cmd = recaption_cmd(*CONFIGS, sets=sets, extra=["--input", str(curated), "--plan"])
    argv = cmd[cmd.index("recaption") :]  # what follows `python -m vl3data.cli`
    capsys.readouterr()
    code = cli.main(argv)
    res = capsys.readouterr()
    assert code == 0, res.err[-2000:]
    lines = res.out.strip().splitlines()
    assert "measured on 4 of" in lines[0]
    rows = {ln.split()[0]: ln.split() for ln in lines[2:]}
    assert set(rows) == {"short", "detailed"}
    for r in rows.values():
        assert float(r[2]) > 0 and float(r[4]) > 0  # images/s and worker-hours per million
    assert not (tmp_path / "anything").exists()


@pytest.mark.slow  # a minute on 2 cores: `make test-slow` (CI runs it)
def test_kill_9_then_rerun_equals_uninterrupted(curated, tiny_internvl, tmp_path, ray_local):
    sets = [
        f"short.engine.model={tiny_internvl}",
        f"detailed.engine.model={tiny_internvl}",
        "input.partition_size=2",
        "ray.num_cpus=2",
    ]
    out = tmp_path / "killed"
    cmd = recaption_cmd(*CONFIGS, sets=sets, extra=["--input", str(curated), "--output", str(out)])
    done = out / "_work" / "detailed" / "done"  # killed in the second pass: the first is reused
    proc = start_until_done(cmd, done, 1, start_new_session=True)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (out / "detailed" / "dataset.json").exists()
    short_done = {
        p.name: p.stat().st_mtime_ns for p in (out / "_work" / "short" / "done").iterdir()
    }
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "already done; resuming" in rerun.stderr and short_done
    ref = tmp_path / "ref"
    run_recaption(
        load_config(RecaptionConfig, CONFIGS, [*sets, f"input.path={curated}", f"output={ref}"]),
        progress=False,
    )
    for kind in ("short", "detailed"):
        a, b = read_dataset_json(out / kind), read_dataset_json(ref / kind)
        assert a["samples"] == b["samples"]
        assert [(out / kind / s["path"]).read_bytes() for s in a["shards"]] == [
            (ref / kind / s["path"]).read_bytes() for s in b["shards"]
        ]
        ids = [r["id"] for r in read_ledger(out / kind).to_pylist()]
        assert len(ids) == len(set(ids)) == len(read_ledger(ref / kind))


def test_where_the_captions_run_is_chosen_from_the_engines(tmp_path, tiny_internvl):
    from recaption.job import RecaptionJob, recaption_hash

    job = RecaptionJob()
    cpu = config(tmp_path, tmp_path / "o", tiny_internvl)
    assert cpu.in_tasks() and not job.needs_ray(cpu)  # transformers on the CPU: in the tasks
    need = job.worker_memory(cpu)
    assert need.field == "short.engine.model" and need.bytes > 1 << 30  # the model, once
    served = config(
        tmp_path,
        tmp_path / "o",
        tiny_internvl,
        *(f"{k}.engine.kind=openai" for k in ("short", "detailed")),
        *(f"{k}.engine.base_url=http://127.0.0.1:9/v1" for k in ("short", "detailed")),
    )
    assert served.in_tasks() and job.worker_memory(served) is None  # the server holds it
    gpu = config(tmp_path, tmp_path / "o", tiny_internvl, "detailed.engine.num_gpus=1")
    assert not gpu.in_tasks() and job.needs_ray(gpu) and job.worker_memory(gpu) is None
    pool = config(tmp_path, tmp_path / "o", tiny_internvl, "run_in=pool")
    assert job.needs_ray(pool)
    assert recaption_hash(pool) == recaption_hash(cpu)  # where it runs decides no output
    with pytest.raises(ConfigError, match="run_in"):
        config(tmp_path, tmp_path / "o", tiny_internvl, "run_in=gpu")


@pytest.mark.slow  # three runs of both subsets
def test_captions_in_the_tasks_equal_the_actor_pools_on_ray_and_on_local_processes(
    curated, tiny_internvl, tmp_path, ray_local
):
    """The same shards, byte for byte, whether the engine runs in an actor pool, in plain
    tasks on Ray, or in plain tasks on local worker processes (no Ray)."""
    runs = {
        "pool": ["run_in=pool"],
        "tasks on ray": ["run_in=tasks"],
        "local processes": ["ray.executor=processes", "ray.num_cpus=2"],
    }
    found = {}
    for name, more in runs.items():
        out = tmp_path / name.replace(" ", "_")
        run_recaption(config(curated, out, tiny_internvl, *more), progress=False)
        stats = json.loads((out / "short" / "stats.json").read_text())
        found[name] = (
            set(stats["passes_s"]["short"].get("phases", {})),
            {k: [p.read_bytes() for p in shard_paths(out / k)] for k in ("short", "detailed")},
        )
    assert found["tasks on ray"][0] == {"ray"} and found["local processes"][0] == {"processes"}
    shards = {name: f[1] for name, f in found.items()}
    assert shards["pool"]["short"] and shards["pool"]["detailed"]
    assert shards["pool"] == shards["tasks on ray"] == shards["local processes"]


def test_a_curated_sample_without_an_image_gets_a_ledger_row(tmp_path):
    """A shard set edited by hand (or by another tool) may hold a record with no image: it is
    an error row with its reason, and the samples around it load."""
    from engine.partitions import Partition
    from manifests.dataset import write_dataset_json
    from manifests.shards import ShardSetWriter
    from recaption.job import load_image_partition

    writer = ShardSetWriter(tmp_path, "images", 100, 10**9)
    rec = {"conversations": [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": "x"}]}
    for key, members in (
        ("a", {"jpg": b"\xff\xd8 (the loader does not decode)", "json": json.dumps(rec).encode()}),
        ("b", {"json": json.dumps(rec).encode()}),
        ("c", {"png": b"\x89PNG", "json": json.dumps(rec).encode()}),
    ):
        writer.write({"__key__": key, **members})
    shards = writer.close()
    write_dataset_json(
        tmp_path, name="t", modality="image", task="t", shards=shards, config={}, config_hash="x"
    )
    part = Partition(0, "shard_slice", {"shard": shards[0]["path"], "skip": 0, "take": 3})
    rows = load_image_partition(part, str(tmp_path)).to_pylist()
    assert [(r["id"], r["status"], r["reason"], r["ext"]) for r in rows] == [
        ("a", "kept", None, "jpg"),
        ("b", "error", "no_image", None),
        ("c", "kept", None, "png"),
    ]
    assert rows[1]["stage"] == "load" and rows[1]["image"] is None
