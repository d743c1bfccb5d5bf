"""Kill -9 an import once some partitions are done, rerun: the same ledger and shard bytes as an
uninterrupted run (the engine's per-partition done markers, written last)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ingest.config import ImportConfig
from ingest.job import run_import
from manifests.configs import load_config
from manifests.dataset import read_dataset_json
from manifests.ledger import read_ledger
from tests.cli import start_until_done
from tests.ingest.inputs import jpeg, turns

SETS = ["input.partition_size=2", "shards.max_count=3", "ray.num_cpus=2"]


def _inputs(root: Path, photos: dict, n: int = 40) -> tuple[Path, Path]:
    media = root / "images"
    media.mkdir(parents=True)
    names = sorted(photos)
    lines = []
    for i in range(n):
        (media / f"{i}.jpg").write_bytes(jpeg(photos[names[i % len(names)]], side=64 + i))
        lines.append({"image": f"{i}.jpg", "conversations": turns("<image>\nWhat?", f"No {i}.")})
    ann = root / "a.jsonl"
    ann.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return ann, media


def _snapshot(out: Path) -> tuple[list[dict], dict[str, bytes]]:
    ledger = sorted(read_ledger(out).to_pylist(), key=lambda r: r["id"])
    shards = {s["path"]: (out / s["path"]).read_bytes() for s in read_dataset_json(out)["shards"]}
    return ledger, shards


@pytest.mark.slow  # two Ray start-ups in subprocesses and a kill -9
def test_kill_9_then_rerun_equals_uninterrupted(ray_local, photos, tmp_path):
    ann, media = _inputs(tmp_path, photos)
    sets = [f"input.annotations={ann}", f"input.media={media}", *SETS]
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "vl3data.cli", "import", "configs/import_llava.yaml"]
    cmd += ["--no-progress", *(f"--set={s}" for s in [*sets, f"output={out}"])]
    done = out / "_work" / "import" / "done"
    proc = start_until_done(cmd, done, 3, start_new_session=True)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    total = len(json.loads((out / "_work" / "plan.json").read_text())["partitions"])
    assert 3 <= len(list(done.iterdir())) < total
    assert not (out / "image" / "dataset.json").exists()

    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    reference = tmp_path / "reference"
    run_import(
        load_config(ImportConfig, "configs/import_llava.yaml", [*sets, f"output={reference}"]),
        progress=False,
    )
    got_ledger, got_shards = _snapshot(out / "image")
    want_ledger, want_shards = _snapshot(reference / "image")
    assert len(got_ledger) == 40 and got_ledger == want_ledger
    assert len(got_shards) > 1 and got_shards == want_shards
