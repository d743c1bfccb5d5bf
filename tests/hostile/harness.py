"""The hostile corpus's harness: run the real ``vl3data curate`` in a process of its own and
check the uniform promises for every run.

- no traceback, exit code 0;
- every input has exactly one ledger row, with the expected status and reason;
- nothing outside the output folder is written or deleted (a (path, size, mtime) snapshot of
  the test's tree, output excluded, before and after);
- no connection to a non-allowed address: a ``sitecustomize`` on ``PYTHONPATH`` installs an
  audit hook in the driver and in every Ray worker (they inherit the environment) that appends
  each AF_INET/AF_INET6 ``socket.connect`` address, with its process id, to a file.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from manifests.ledger import read_ledger

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "curate_local.yaml"
CLI = Path(sys.executable).with_name("vl3data")

SITECUSTOMIZE = """
import os, socket, sys

_LOG = os.environ.get("HOSTILE_CONNECT_LOG")


def _hook(event, args):
    if event != "socket.connect" or not _LOG:
        return
    sock, address = args[0], args[1]
    try:
        family = sock.family
    except Exception:
        return
    if family not in (socket.AF_INET, socket.AF_INET6):
        return
    with open(_LOG, "a") as f:
        f.write(f"connect {os.getpid()} {address[0]} {address[1]}\\n")


if _LOG:
    sys.addaudithook(_hook)
    with open(_LOG, "a") as f:  # which processes carry the hook: the driver and Ray's workers
        f.write(f"start {os.getpid()} - 0\\n")
"""


@dataclass(repr=False)
class Run:
    """One finished ``vl3data curate`` run and what was observed around it."""

    proc: subprocess.CompletedProcess
    out: Path
    rows: list[dict]
    connects: list[tuple[int, str, int]]
    before: dict
    after: dict
    seconds: float
    extra: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"Run(rc={self.proc.returncode}, rows={len(self.rows)}, {self.seconds:.1f}s)"


def snapshot(root: Path, skip: set[Path]) -> dict[str, tuple]:
    """(kind, size, mtime) of everything under ``root`` (links not followed), minus ``skip``."""
    found: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if here / d not in skip]
        for name in dirnames + filenames:
            p = here / name
            if p in skip:
                continue
            st = os.lstat(p)
            found[os.fsdecode(p)] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return found


def _watched(base: Path) -> tuple[Path, Path, Path, dict[str, str]]:
    """The output, connect log, working directory and environment of a watched CLI run in
    ``base``: the audit-hook ``sitecustomize`` lies beside ``base``, outside the snapshot
    (written before, read only), and Ray stays quiet and on loopback."""
    out = base / "out"
    site = base.parent / f"{base.name}-site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    log = base.parent / f"{base.name}-connects.log"
    log.unlink(missing_ok=True)
    cwd = base / "cwd"
    cwd.mkdir(exist_ok=True)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)]),
        "HOSTILE_CONNECT_LOG": str(log),
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
        "PYTHONWARNINGS": "ignore",
    }
    return out, log, cwd, env


def run_curate(base: Path, pool: Path, kind: str, sets: list[str], timeout: float = 240) -> Run:
    """``vl3data curate configs/curate_local.yaml`` over ``pool`` into ``base/out``, from a
    working directory inside ``base`` (so a stray file written to the cwd is seen too)."""
    out, log, cwd, env = _watched(base)
    argv = [
        str(CLI),
        "curate",
        str(CONFIG),
        "--set",
        f"input.kind={kind}",
        "--set",
        f"input.path={pool}",
        "--set",
        f"output={out}",
        "--set",
        "ray.num_cpus=2",
        *[a for s in sets for a in ("--set", s)],
        "--no-progress",
    ]
    before = snapshot(base, {out})
    t0 = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)
    seconds = time.monotonic() - t0
    after = snapshot(base, {out})
    try:
        rows = read_ledger(
            out, ["id", "source_key", "status", "stage", "reason", "text", "url"]
        ).to_pylist()
    except FileNotFoundError:
        rows = []
    connects, hooked = [], set()
    if log.exists():
        for line in log.read_text().splitlines():
            what, pid, host, port = line.split(" ")
            if what == "start":
                hooked.add(int(pid))
            else:
                connects.append((int(pid), host, int(port)))
    if proc.returncode != 0 or "Traceback" in proc.stderr:
        sys.stderr.write(proc.stderr[-20000:])
    return Run(proc, out, rows, connects, before, after, seconds, {"hooked": hooked})


def assert_clean_exit(run: Run) -> None:
    assert run.proc.returncode == 0, run.proc.stderr[-5000:]
    assert "Traceback" not in run.proc.stderr, run.proc.stderr[-5000:]
    assert "Traceback" not in run.proc.stdout, run.proc.stdout[-5000:]


def assert_nothing_else_touched(run: Run) -> None:
    changed = {
        p: (run.before.get(p), run.after.get(p))
        for p in set(run.before) | set(run.after)
        if run.before.get(p) != run.after.get(p)
    }
    assert not changed, f"written or deleted outside the output: {sorted(changed)[:20]}"


def loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback and host in (
            "127.0.0.1",
            "::1",
        )
    except ValueError:
        return False


def assert_only_loopback(run: Run) -> None:
    bad = [c for c in run.connects if not loopback(c[1])]
    assert not bad, f"connections to non-allowed addresses: {bad[:20]}"


def free_port() -> int:
    """A port nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


VIDEO_CONFIG = ROOT / "configs" / "video_demo.yaml"
VIDEO_TASKS = ("caption", "streaming", "grounding")
VIDEO_COLUMNS = [
    "id", "source", "source_key", "video", "status", "stage", "reason", "issues", "clips",
    "duration", "width", "height", "rotation", "vfr", "grid_frames", "keys",
]  # fmt: skip


def _read_connects(log: Path) -> tuple[list[tuple[int, str, int]], set[int]]:
    connects, hooked = [], set()
    if log.exists():
        for line in log.read_text().splitlines():
            what, pid, host, port = line.split(" ")
            if what == "start":
                hooked.add(int(pid))
            else:
                connects.append((int(pid), host, int(port)))
    return connects, hooked


def run_video(
    base: Path,
    videos: Path,
    annotations: Path,
    sets: list[str],
    fmt: str = "jsonl",
    timeout: float = 240,
) -> Run:
    """``vl3data video configs/video_demo.yaml`` over ``videos`` and ``annotations`` into
    ``base/out``, with the same watch as :func:`run_curate` (connect log, snapshot of ``base``
    minus the output, a working directory inside ``base``). ``Run.rows`` is the caption set's
    ledger; ``extra["ledgers"]`` has every task's, ``extra["sets"]`` what is read from the shards
    (``{task: {key: record}}``)."""
    out, log, cwd, env = _watched(base)
    argv = [
        str(CLI),
        "video",
        str(VIDEO_CONFIG),
        *[a for s in [
            f"input.videos={videos}",
            f"input.annotations={annotations}",
            f"input.format={fmt}",
            f"output={out}",
            "ray.num_cpus=2",
            *sets,
        ] for a in ("--set", s)],
        "--no-progress",
    ]  # fmt: skip
    before = snapshot(base, {out})
    t0 = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)
    seconds = time.monotonic() - t0
    after = snapshot(base, {out})
    ledgers = {}
    for task in VIDEO_TASKS:
        try:
            ledgers[task] = read_ledger(out / task, VIDEO_COLUMNS).to_pylist()
        except FileNotFoundError:
            ledgers[task] = []
    connects, hooked = _read_connects(log)
    if proc.returncode != 0 or "Traceback" in proc.stderr:
        sys.stderr.write(proc.stderr[-20000:])
    extra = {"hooked": hooked, "ledgers": ledgers, "sets": _video_records(out)}
    return Run(proc, out, ledgers["caption"], connects, before, after, seconds, extra)


def _video_records(out: Path) -> dict[str, dict[str, dict]]:
    """``{task: {sample key: json record}}`` from each task's shards (frames left out)."""
    import json
    import tarfile

    found: dict[str, dict[str, dict]] = {}
    for task in VIDEO_TASKS:
        found[task] = {}
        for tar in sorted((out / task / "shards").glob("*.tar")):
            with tarfile.open(tar) as tf:
                for m in tf:
                    if m.name.endswith(".json"):
                        data = tf.extractfile(m).read()
                        found[task][m.name[: -len(".json")]] = json.loads(data)
    return found
