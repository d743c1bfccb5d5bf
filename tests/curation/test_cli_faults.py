"""Faults of the machine, met by the real CLI: a read-only output, a full disk, Ctrl-C.

Each ends in one line that says what happened and what to do, never a traceback, and the same
command run again (with space made, or after the interrupt) finishes the job with nothing lost
or doubled. The read-only and full file systems are real tmpfs mounts inside a private mount
namespace (``unshare``), so nothing outside the test is touched.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from manifests.ledger import read_ledger
from vl3data.sample_media import jpeg_bytes

# real CLI runs under faults (tmpfs mounts, SIGINT): `make test-slow` (and CI) runs them;
# `make test` stays under 10 minutes on 2 cores
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
VL3DATA = str(Path(sys.executable).parent / "vl3data")


def _env() -> dict[str, str]:
    return {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}


def _can_unshare() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = "mount -t tmpfs -o size=1m tmpfs /mnt 2>/dev/null || mount -t tmpfs tmpfs /tmp"
    return (
        subprocess.run(["unshare", "-rm", "sh", "-c", probe], capture_output=True).returncode == 0
    )


needs_mounts = pytest.mark.skipif(
    not _can_unshare(), reason="needs unshare -rm (a private mount namespace) for tmpfs mounts"
)


def _pool(root: Path, photos, n: int) -> Path:
    root.mkdir(parents=True)
    names = sorted(photos)
    for i in range(n):
        (root / f"{i:03d}.jpg").write_bytes(jpeg_bytes(photos[names[i % len(names)]]))
    return root


def _curate(pool: Path, out: Path, *extra: str) -> list[str]:
    return [
        VL3DATA,
        "curate",
        "configs/curate_local.yaml",
        "--set",
        f"input.path={pool}",
        "--set",
        f"output={out}",
        "--set",
        "input.partition_size=8",
        "--no-progress",
        *[a for kv in extra for a in ("--set", kv)],
    ]


def _in_namespace(tmp_path: Path, script: str) -> dict[str, tuple[int, str]]:
    """Run ``script`` (bash) in a private mount namespace; each ``run NAME cmd...`` line in it
    records that command's exit status and stderr, returned by NAME."""
    logs = tmp_path / "logs"
    logs.mkdir()
    prelude = f"""
run() {{ name=$1; shift; "$@" >/dev/null 2>"{logs}/$name.err"; echo $? > "{logs}/$name.rc"; }}
set -u
cd {shlex.quote(str(REPO))}
"""
    done = subprocess.run(
        ["unshare", "-rm", "bash", "-c", prelude + script],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr
    return {
        p.stem: (int(p.read_text()), (logs / f"{p.stem}.err").read_text())
        for p in logs.glob("*.rc")
    }


def _last_line(err: str) -> str:
    return err.strip().splitlines()[-1]


@needs_mounts
def test_a_read_only_output_is_one_line_naming_it(tmp_path, photos):
    pool = _pool(tmp_path / "pool", photos, 4)
    ro = tmp_path / "ro"
    ro.mkdir()
    cmd = shlex.join(_curate(pool, ro / "out"))
    got = _in_namespace(tmp_path, f"mount -t tmpfs -o ro tmpfs {ro}\nrun ro {cmd}\n")
    rc, err = got["ro"]
    assert rc == 1
    assert "Traceback" not in err
    assert _last_line(err) == (
        f"vl3data: error: cannot write {ro / 'out'}: Read-only file system; "
        "choose an output folder you can write to (--set output=...)"
    )


@needs_mounts
def test_a_full_disk_is_one_line_and_the_same_command_finishes_once_there_is_room(tmp_path, photos):
    pool = _pool(tmp_path / "pool", photos, 48)
    disk = tmp_path / "disk"
    disk.mkdir()
    out = disk / "out"
    cmd = shlex.join(_curate(pool, out))
    got = _in_namespace(
        tmp_path,
        f"""mount -t tmpfs -o size=400k tmpfs {disk}
run full {cmd}
mount -o remount,size=64m {disk}
run again {cmd}
cp -a {out} {tmp_path / "kept"}
""",
    )
    rc, err = got["full"]
    assert rc == 1 and "Traceback" not in err
    assert _last_line(err).startswith("vl3data: error: cannot write")
    assert "No space left on device; free space there" in _last_line(err)
    rc, err = got["again"]
    assert rc == 0, err
    doc = json.loads((tmp_path / "kept" / "dataset.json").read_text())
    assert doc["samples"] == 48
    ledger = read_ledger(tmp_path / "kept")
    assert ledger.num_rows == 48 and len(set(ledger["id"].to_pylist())) == 48


def test_ctrl_c_says_how_to_resume_and_the_same_command_finishes(tmp_path, photos, image_server):
    """Ctrl-C while partitions are downloading (their URLs are held by the server until the
    test opens the gate), after others have finished: one line with the command to run again,
    exit 130; the rerun keeps the finished partitions and completes the rest."""
    names = sorted(photos)
    urls = []
    for i in range(12):
        image_server.add_image(f"{i}.jpg", jpeg_bytes(photos[names[i % len(names)]]), "image/jpeg")
        urls.append(image_server.url(("/img/" if i < 4 else "/gate/") + f"{i}.jpg"))
    pq.write_table(
        pa.table({"url": urls, "text": [f"photo {i}" for i in range(12)]}), tmp_path / "p.parquet"
    )
    out = tmp_path / "out"
    cmd = [
        VL3DATA,
        "curate",
        "configs/curate_local.yaml",
        "--no-progress",
        *[
            a
            for kv in (
                "input.kind=url_parquet",
                f"input.path={tmp_path / 'p.parquet'}",
                "input.partition_size=2",
                f"output={out}",
                "download.allow_addresses=[127.0.0.1/32]",
                "download.read_timeout_s=600",
                "download.total_timeout_s=900",
            )
            for a in ("--set", kv)
        ],
    ]
    image_server.hang_limit_s = 900.0
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        env=_env(),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if list(out.glob("_work/*/done/*.json")):
            break
        time.sleep(0.1)
    assert proc.poll() is None, proc.stderr.read()
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C sends: the whole group
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    last = _last_line(err)
    assert last.startswith("vl3data: interrupted. Finished partitions")
    assert last.endswith(shlex.join(["vl3data", *cmd[1:]]))
    finished = {int(p.stem[1:]) for p in out.glob("_work/*/done/*.json")}
    assert 1 <= len(finished) < 6

    image_server.gate.set()
    again = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    doc = json.loads((out / "dataset.json").read_text())
    assert doc["samples"] == 12
    ledger = read_ledger(out)
    assert sorted(ledger["source_key"].to_pylist()) == sorted(urls)
    for i in range(4):  # the partitions finished before the interrupt were not fetched again
        if i // 2 in finished:  # partitions of 2 URLs
            assert image_server.hits[f"/img/{i}.jpg"] == 1
