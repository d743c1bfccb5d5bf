"""Running one node: the function a Ray task executes, and one small runner per job kind.

Each node keeps a marker in the build's state folder (``STATE/NODE.json``): ``running`` while it
works, ``failed`` with the error, ``done`` with what it measured (inputs, outputs, seconds: the
rates ``--plan`` uses). A rerun whose fingerprint matches a ``running`` or ``failed`` marker
resumes the job's own way (the data jobs per partition, the trainer from its latest checkpoint);
any other rerun starts the job over. The record in the outputs is written last, so a node killed
at any point is never taken for done.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

from engine.progress import status as show_status
from engine.progress import status_to
from vl3data.builder.freshness import fingerprint, write_record
from vl3data.builder.graph import Node

log = logging.getLogger(__name__)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def marker_path(state: str, node: str) -> Path:
    return Path(state) / f"{node}.json"


def status_path(state: str, node: str) -> Path:
    """The running node's latest progress line (``engine.progress.status_to``), which the
    build shows while the node's own output goes to its log; removed when the node ends."""
    return Path(state) / f"{node}.status"


def read_marker(state: str, node: str) -> dict | None:
    try:
        return json.loads(marker_path(state, node).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def write_marker(state: str, node: str, doc: dict) -> None:
    path = marker_path(state, node)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


LOCK_WAIT_S = 120.0


# --- one runner per kind: run the job, return what was measured -------------------------------


def _data_job(node: Node, resume: bool) -> dict:
    """A data job (curate, recaption, video) through the engine's skeleton; what it measured."""
    from engine.job import run_job
    from vl3data.jobs import job_named

    job = job_named(node.kind)
    node.job.check_runnable()
    # a rerun right after a killed build: the killed build's worker may hold the output's lock
    # for the few seconds Ray takes to reap it
    run_job(job, node.job, restart=not resume, progress=False, lock_wait_s=LOCK_WAIT_S)
    measured = job.measure(node.job)
    measured.pop("wall_s", None)  # the build times the node itself
    return measured


def _mix(node: Node, resume: bool) -> dict:
    from mixtures.materialise import write_mixture
    from mixtures.recipe import check_recipe

    problems = check_recipe(node.job)
    if problems:
        raise RuntimeError("the recipe cannot be met: " + "; ".join(problems))
    out = Path(node.outputs[0])
    if out.exists():  # one pass, nothing to resume: start clean
        shutil.rmtree(out)
    doc = write_mixture(node.job, out, shuffle_buffer=node.options["shuffle_buffer"])
    return {"unit": "samples", "inputs": doc["samples"], "outputs": doc["samples"]}


def _train(node: Node, resume: bool) -> dict:
    import torch

    from model.loop import run

    if node.options.get("workers"):  # data parallel on Ray Train workers, in this Ray
        from model.ray_launch import launch_config

        summary = launch_config(
            node.job,
            [node.stage],
            resume=resume,
            workers=node.options["workers"],
            use_gpu=node.options["use_gpu"],
            cpus_per_worker=node.options["cpus_per_worker"],
        )
    else:
        threads = int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1)
        torch.set_num_threads(max(1, threads))
        summary = run(node.job, [node.stage], resume=resume)
    result = summary["stages"][node.stage]
    if not result["done"]:
        raise RuntimeError(
            f"stage {node.stage} stopped at step {result['steps']} (train.stop_after): the "
            "next build resumes it"
        )
    return {"unit": "steps", "inputs": result["steps"], "outputs": result["steps"]}


RUNNERS = {
    "curate": _data_job,
    "recaption": _data_job,
    "video": _data_job,
    "video-raw": _data_job,
    "import": _data_job,
    "mix": _mix,
    "train": _train,
}


def cpus_used(node: Node, machine: dict) -> float:
    """The CPUs a node keeps busy, for the plan's worker-hours: a mixture is one process; a
    stage on Ray Train workers takes theirs; the data jobs (Ray Data over the cluster) and an
    in-process training stage (torch threads = the machine's CPUs) take the machine's."""
    if node.kind == "mix":
        return 1
    if node.kind == "train" and node.options.get("workers"):
        return node.options["workers"] * node.options["cpus_per_worker"]
    return machine["cpus"]


def run_node(
    node: Node, nodes: list[Node], state: str, machine: dict, log_level: str = "INFO"
) -> dict:
    """Run ``node`` (its inputs are built), write its record, and return a summary; never
    raises: a failure comes back as ``{"ok": False, "error": ...}`` with the log's path."""
    t0 = time.perf_counter()
    fp, inputs = fingerprint(node, nodes)
    marker = read_marker(state, node.name) or {}
    resume = marker.get("fingerprint") == fp and marker.get("state") in ("running", "failed")
    started = _now()
    write_marker(state, node.name, {"fingerprint": fp, "state": "running", "started_at": started})
    log_path = marker_path(state, node.name).with_suffix(".log")
    with (
        open(log_path, "a") as sink,
        contextlib.redirect_stdout(sink),
        contextlib.redirect_stderr(sink),
    ):
        handler = logging.StreamHandler(sink)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        old_level = root.level
        root.setLevel(getattr(logging, log_level.upper(), logging.INFO))
        print(f"--- {started} {node.name} ({'resuming' if resume else 'from the start'})")
        try:
            status_to(status_path(state, node.name))
            show_status(f"{node.kind}: starting", say=False)
            measured = RUNNERS[node.kind](node, resume)
        except Exception as exc:  # reported, with the traceback in the log
            traceback.print_exc()
            error = f"{type(exc).__name__}: {exc}"
            write_marker(
                state,
                node.name,
                {"fingerprint": fp, "state": "failed", "started_at": started, "error": error},
            )
            return {"node": node.name, "ok": False, "error": error, "log": str(log_path)}
        finally:
            status_to(None)
            status_path(state, node.name).unlink(missing_ok=True)
            root.removeHandler(handler)
            root.setLevel(old_level)
    wall = round(time.perf_counter() - t0, 3)
    record = {
        "node": node.name,
        "fingerprint": fp,
        "config_hash": node.config_hash,
        "inputs": inputs,
        "built_at": _now(),
    }
    for out in node.outputs:
        write_record(node, out, record)
    done = {
        "fingerprint": fp,
        "state": "done",
        "started_at": started,
        "finished_at": record["built_at"],
        "wall_s": wall,
        "resumed": resume,
        "machine": machine,
        "cpus": cpus_used(node, machine),
        "measured": measured,
    }
    write_marker(state, node.name, done)
    return {"node": node.name, "ok": True, "wall_s": wall, "resumed": resume, **measured}
