"""Running a build: the stale nodes as Ray tasks, each as soon as what it reads is built, so the
image branch (curate, recaption) and every video source run side by side.

Node tasks take no CPU of their own (each job's Ray Data work asks for its own) and run on the
driver's node, where the configs and relative paths are; a train node with ``num_gpus`` goes to
a GPU worker. The first failed node stops the build: nothing new starts, the nodes already
running finish and are kept, and the error names the node, the reason and its log. The same
command again resumes at the failed node.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from engine.progress import read_status
from manifests.configs import ConfigError
from vl3data.builder.board import REFRESH_S, NodeBoard
from vl3data.builder.config import BuildConfig
from vl3data.builder.freshness import Status, statuses
from vl3data.builder.graph import Node, make_graph, producer, select
from vl3data.builder.run_node import run_node, status_path

log = logging.getLogger("vl3data.builder")


class BuildFailed(RuntimeError):
    """A node failed; earlier and parallel nodes that finished are kept."""


@dataclass
class BuildResult:
    nodes: list[Node]
    status: dict[str, Status]  # before the run
    ran: list[str] = field(default_factory=list)  # in the order they finished
    results: dict[str, dict] = field(default_factory=dict)


def load_graph(cfg: BuildConfig, targets: list[str] | None = None) -> list[Node]:
    """The selected nodes, validated: every job config, and every raw input exists."""
    nodes = select(make_graph(cfg), targets)
    for node in nodes:
        for label, path in node.inputs.items():
            if producer(path, nodes) is None and not Path(path).exists():
                raise ConfigError(
                    f"{node.name} input {label!r}",
                    f"{path} does not exist and no node of this build writes it",
                    "fix the job's config or --set paths.NAME=... in the build config",
                )
    return nodes


def _init_ray(cfg: BuildConfig) -> None:
    from engine.ray_session import init_ray

    init_ray(cfg.ray.address, cfg.ray.num_cpus, cfg.ray.object_store_mb, cfg.log_level)


def _write_index(cfg: BuildConfig, result: BuildResult, outcome: str, echo) -> None:
    """``OUT/index.html`` after every build, a failed one too; a page that cannot be written
    is a warning, never a failed build."""
    from vl3data.builder.index_page import write_build_index

    try:
        failed = [n for n, r in result.results.items() if not r.get("ok")]
        path = write_build_index(cfg, result.nodes, result.status, result.ran, outcome, failed)
    except Exception as exc:  # the build's data is fine: say so and go on
        log.warning("the build index could not be written: %s: %s", type(exc).__name__, exc)
        return
    echo(f"{cfg.name}: index {path}")


def run_build(
    cfg: BuildConfig,
    targets: list[str] | None = None,
    *,
    echo=print,
    board: NodeBoard | None = None,
) -> BuildResult:
    """Build what is stale among ``targets`` (and what they need); raises :class:`BuildFailed`
    at the first failed node. ``board`` shows the running nodes' progress (default: on
    stdout, redrawn on a terminal, periodic lines elsewhere)."""
    nodes = load_graph(cfg, targets)
    st = statuses(nodes)
    result = BuildResult(nodes, st)
    stale = [n for n in nodes if st[n.name].stale]
    for n in nodes:
        echo(f"  {n.name:<16} {'run ' if st[n.name].stale else 'skip'}  {st[n.name].why}")
    if not stale:
        _write_index(cfg, result, "everything was up to date", echo)
        echo(f"{cfg.name}: everything is up to date")
        return result

    import ray

    board = board if board is not None else NodeBoard(echo)
    say = echo

    def echo(text: str) -> None:  # a message clears the board's lines first
        board.clear()
        say(text)

    _init_ray(cfg)  # it logs "starting an embedded Ray" and "Ray up in ..."
    res = ray.cluster_resources()
    machine = {"cpus": int(res.get("CPU", 0)), "gpus": int(res.get("GPU", 0))}
    here = ray.get_runtime_context().get_node_id()
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    task = ray.remote(run_node)
    pending = {n.name: n for n in stale}
    running: dict = {}  # ObjectRef -> (name, start)
    built = {n.name for n in nodes if not st[n.name].stale}
    failed: list[dict] = []
    t_all = time.perf_counter()

    def ready(n: Node) -> bool:
        return all(d in built for d in n.deps)

    while pending or running:
        if not failed:
            for name, n in list(pending.items()):
                if len(running) >= cfg.max_parallel or not ready(n):
                    continue
                opts: dict = {"num_cpus": 0, "max_retries": 0}
                gpus = n.options.get("num_gpus", 0)
                if gpus:
                    opts["num_gpus"] = gpus
                else:
                    opts["scheduling_strategy"] = NodeAffinitySchedulingStrategy(here, soft=False)
                if n.kind == "train":  # torch's threads: the machine's CPUs, not Ray's 1
                    threads = str(max(1, machine["cpus"]))
                    opts["runtime_env"] = {"env_vars": {"OMP_NUM_THREADS": threads}}
                ref = task.options(**opts).remote(n, nodes, cfg.state, machine, cfg.log_level)
                running[ref] = (name, time.perf_counter())
                del pending[name]
                echo(f"[{time.perf_counter() - t_all:7.1f}s] start {name}")
        if not running:
            break  # a failure stopped the rest
        done, _ = ray.wait(list(running), num_returns=1, timeout=REFRESH_S)
        if not done:
            if board.due():
                names = [name for name, _ in running.values()]
                lines = {n: read_status(status_path(cfg.state, n)) for n in names}
                board.show({n: v for n, v in lines.items() if v}, time.perf_counter() - t_all)
            continue
        for ref in done:
            name, t0 = running.pop(ref)
            try:
                out = ray.get(ref)
            except Exception as exc:
                out = {"node": name, "ok": False, "error": f"{type(exc).__name__}: {exc}"}
            result.results[name] = out
            took = time.perf_counter() - t0
            if out["ok"]:
                built.add(name)
                result.ran.append(name)
                what = f"{out['inputs']} {out['unit']} in, {out['outputs']} out"
                echo(f"[{time.perf_counter() - t_all:7.1f}s] done  {name} ({took:.1f}s; {what})")
            else:
                failed.append(out)
                echo(f"[{time.perf_counter() - t_all:7.1f}s] FAIL  {name} ({took:.1f}s)")
    if failed:
        first = failed[0]
        kept = ", ".join(result.ran) or "none"
        skipped = ", ".join(pending) or "none"
        _write_index(cfg, result, f"failed at {first['node']}", echo)
        raise BuildFailed(
            f"node {first['node']} failed: {first['error']}\n"
            f"  its log: {first.get('log', '(the worker died; see Ray logs)')}\n"
            f"  built and kept in this run: {kept}; not started: {skipped}\n"
            f"  fix the cause and run the same command again: it resumes at {first['node']}"
        )
    took = time.perf_counter() - t_all
    _write_index(cfg, result, f"built {len(result.ran)} node(s) in {took:.1f}s", echo)
    echo(f"{cfg.name}: built {len(result.ran)} node(s) in {took:.1f}s")
    return result
