"""The export's output: written atomically (a killed run's leftovers never show, a rerun gives
the same files), never over a non-empty folder without --overwrite, refused in one line when a
shard is damaged, and streamed: memory does not grow with the number of samples."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest

from export.run import export_shard_set
from manifests.dataset import write_dataset_json
from manifests.shards import ShardSetWriter
from tests.mixtures.test_damaged_sources import damaged_set
from vl3data.cli import main

ROOT = Path(__file__).parent.parent.parent
BOTH = ["--format", "videollama3,llava"]


def tree(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden ones too) and a hash of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_a_rerun_after_a_crash_gives_the_same_files(export_sets, tmp_path, capsys):
    src = export_sets["caption"]
    assert main(["export", str(src), "--output", str(tmp_path / "a"), *BOTH]) == 0
    printed = capsys.readouterr().out
    assert f"videollama3: 2 records ({tmp_path / 'a' / 'annotations_video.jsonl'} 2)" in printed
    assert "2 videos (10 frames)" in printed
    # what a run killed half-way leaves: its hidden folder, a partial file, a staged frame
    left = tmp_path / ".b.export-tmp"
    (left / ".staging").mkdir(parents=True)
    (left / "annotations_video.jsonl").write_text('{"id": "half')
    (left / ".staging" / "00000.jpg").write_bytes(b"\xff\xd8")
    assert main(["export", str(src), "--output", str(tmp_path / "b"), *BOTH]) == 0
    assert tree(tmp_path / "a") == tree(tmp_path / "b")
    assert not left.exists() and sorted(os.listdir(tmp_path)) == ["a", "b"]
    assert {".staging"} & set(tree(tmp_path / "a")) == set()


def test_a_non_empty_output_is_kept_unless_overwrite(export_sets, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["export", str(export_sets["text"]), "--output", str(out)]) == 1
    err = capsys.readouterr().err
    assert "not empty" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert tree(out) == {"notes.txt": hashlib.sha1(b"mine").hexdigest()}
    assert main(["export", str(export_sets["text"]), "--output", str(out), "--overwrite"]) == 0
    assert "notes.txt" not in tree(out) and (out / "annotations_text.jsonl").is_file()
    assert not (out / "llava.json").exists()  # videollama3 unless --format says otherwise
    empty = tmp_path / "empty"
    empty.mkdir()  # an empty folder is fine without --overwrite
    assert main(["export", str(export_sets["text"]), "--output", str(empty)]) == 0


@pytest.mark.parametrize("how", ["truncated", "empty", "fewer_samples", "garbage"])
def test_a_damaged_shard_is_named_in_one_line(tmp_path, capsys, how):
    src, shard = damaged_set(tmp_path, how)
    out = tmp_path / "out"
    assert main(["export", str(src), "--output", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert str(shard) in err and "rebuild" in err and len(err.splitlines()) == 1
    assert "Traceback" not in err
    assert sorted(os.listdir(tmp_path)) == ["src"]  # no output, no leftover


def test_not_a_shard_set(export_sets, tmp_path, capsys):
    assert main(["export", str(tmp_path), "--output", str(tmp_path / "out")]) == 1
    assert "dataset.json" in capsys.readouterr().err
    videos = export_sets["caption"].parent  # the video job's output: a set per task inside
    assert main(["export", str(videos), "--output", str(tmp_path / "out")]) == 1
    assert "the shard sets in it: caption, grounding, streaming" in capsys.readouterr().err
    assert main(["export", str(tmp_path), "--output", str(tmp_path / "o"), "--format", "x"]) == 1


def _image_set(out: Path, n: int, jpeg: bytes) -> Path:
    w = ShardSetWriter(out, "s", max_count=100, max_bytes=10**9)
    for i in range(n):
        turns = [{"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": f"{i}"}]
        rec = {"image": [f"k{i}.jpg"], "conversations": turns}
        w.write({"__key__": f"k{i:06d}", "jpg": jpeg, "json": json.dumps(rec).encode()})
    write_dataset_json(out, name="s", modality="image", task="t", shards=w.close(), config={},
                       config_hash="t")  # fmt: skip
    return out


def test_memory_is_flat_in_the_number_of_samples(tmp_path, photos):
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(photos[sorted(photos)[0]]).save(buf, format="JPEG", quality=90)
    peaks = {}
    for n in (30, 300):  # 10x the samples (and 10x the bytes)
        src = _image_set(tmp_path / f"s{n}", n, buf.getvalue())
        tracemalloc.start()
        export_shard_set(src, tmp_path / f"o{n}", ["videollama3", "llava"])
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert len((tmp_path / f"o{n}" / "annotations_image.jsonl").read_text().splitlines()) == n
    assert peaks[300] < peaks[30] * 1.5 + 256_000, peaks


@pytest.mark.slow
def test_kill_9_then_the_same_command(export_sets, tmp_path):
    """A real ``vl3data export`` killed with SIGKILL as soon as it has begun writing, then run
    again: the same files as a run never interrupted."""
    src = export_sets["mixed"]
    cmd = [sys.executable, "-m", "vl3data.cli", "export", str(src), *BOTH]
    subprocess.run([*cmd, "--output", str(tmp_path / "ref")], check=True, cwd=ROOT)
    out = tmp_path / "out"
    proc = subprocess.Popen([*cmd, "--output", str(out)], cwd=ROOT)
    deadline = time.monotonic() + 120
    while not (tmp_path / ".out.export-tmp").exists() and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    subprocess.run([*cmd, "--output", str(out)], check=True, cwd=ROOT)
    assert tree(out) == tree(tmp_path / "ref")
