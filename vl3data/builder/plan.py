"""``vl3data build --plan``: what would run, on how much, and what it costs, before anything runs.

Per node: its status (and why), its inputs (counted: image files, parquet rows, tar members,
videos, mixture samples, training steps), the outputs to expect, and the time and worker-hours
at the rate the same node measured in an earlier run (``STATE/NODE.json``, else the output's
``stats.json``: inputs / wall seconds, on the machine recorded there). With ``--target-gpus N``
the same inputs are priced at the published per-GPU rates of ``configs/gpu_rates.yaml`` (their
sources are in docs/SCALE.md). A figure with nothing to base it on prints as ``?``, never a guess.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from manifests.configs import ConfigError, from_dict, load_config, require
from vl3data.builder.config import BuildConfig
from vl3data.builder.freshness import statuses
from vl3data.builder.graph import Node, producer
from vl3data.builder.run_node import read_marker
from vl3data.jobs import DATA_JOBS, job_named

DATA_JOB_NAMES = {j.name for j in DATA_JOBS}


@dataclass
class PlanRow:
    node: str
    kind: str
    run: bool
    why: str
    unit: str
    inputs: int | None  # counted now, or expected from upstream
    outputs: float | None  # expected, at the measured keep fraction
    seconds: float | None  # on the measured machine
    worker_hours: float | None
    rate: float | None  # inputs per second, measured
    rate_source: str  # where the rate came from
    workers: int | None
    gpu: dict = field(default_factory=dict)  # gpu_hours, seconds, usd, rate, source


def measured(node: Node, state: str, own_outputs: bool = True) -> tuple[dict | None, str]:
    """What ``node`` measured the last time it ran: ``{inputs, outputs, wall_s, workers}``, from
    its marker in ``state`` or (``own_outputs``) the stats.json of a run outside the build."""
    m = read_marker(state, node.name)
    if m and m.get("state") == "done" and m.get("measured") and m.get("wall_s"):
        got = m["measured"]
        workers = m.get("cpus") or (m.get("machine") or {}).get("cpus")
        return (
            {
                "inputs": got["inputs"],
                "outputs": got["outputs"],
                "wall_s": m["wall_s"],
                "workers": workers,
            },
            str(Path(state) / f"{node.name}.json"),
        )
    if own_outputs and node.kind in DATA_JOB_NAMES:  # a run outside the build
        try:
            got = job_named(node.kind).measure(node.job)
        except (FileNotFoundError, json.JSONDecodeError):
            return None, ""
        keep = ("inputs", "outputs", "wall_s")
        return (
            {**{k: got[k] for k in keep}, "workers": None},
            " + ".join(str(Path(o) / "stats.json") for o in node.outputs),
        )
    return None, ""


def _samples(path: str) -> int | None:
    try:
        return json.loads((Path(path) / "dataset.json").read_text())["samples"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return None


def _count_inputs(node: Node, nodes: list[Node], expected: dict[str, float]) -> int | None:
    """The node's inputs: counted on disk, or what an upstream node that will run should make."""

    def upstream(path: str) -> float | None:
        hit = producer(path, nodes)
        if hit is not None and hit[0].name in expected:
            return expected[hit[0].name] / max(1, len(hit[0].outputs))
        return _samples(path)

    if node.kind in DATA_JOB_NAMES:
        for path in node.inputs.values():  # what an upstream node that will run should make
            hit = producer(path, nodes)
            if hit is not None and hit[0].name in expected:
                return round(expected[hit[0].name] / max(1, len(hit[0].outputs)))
        return job_named(node.kind).count_inputs(node.job)
    if node.kind == "mix":
        total = 0.0
        for _, _, src in node.job.sources():
            if src.path.endswith(".jsonl"):
                try:
                    with open(src.path) as f:
                        total += sum(1 for line in f if line.strip())
                except FileNotFoundError:
                    return None
                continue
            got = upstream(src.path)
            if got is None:
                return None
            total += got
        return round(total)
    if node.kind == "train":
        return node.job.stage(node.stage).steps
    return None


@dataclass
class GpuRate:
    """One node kind's throughput on one GPU, in the node's input unit, with its source."""

    unit: str = ""
    per_gpu_s: float | None = None
    source: str = ""

    def __post_init__(self) -> None:
        require(self.unit in UNITS, "unit", f"{self.unit!r} is not one of {UNITS}")
        require(self.per_gpu_s is None or self.per_gpu_s > 0, "per_gpu_s", "must be > 0 or null")
        require(bool(self.source.strip()), "source", "every rate names its source")


@dataclass
class Price:
    value: float | None = None
    source: str = ""


@dataclass
class GpuRates:
    """``configs/gpu_rates.yaml``: published per-GPU rates (sources in docs/SCALE.md)."""

    gpu: str = ""
    usd_per_gpu_hour: Price = field(default_factory=Price)
    nodes: dict[str, GpuRate] = field(default_factory=dict)

    def __post_init__(self) -> None:
        require(bool(self.gpu), "gpu", "names no GPU model")
        for kind, rate in list(self.nodes.items()):
            require(kind in RATE_KINDS, f"nodes.{kind}", f"is not one of {RATE_KINDS}")
            if isinstance(rate, dict):
                self.nodes[kind] = from_dict(GpuRate, rate, prefix=f"nodes.{kind}")

    @property
    def name(self) -> str:
        return self.gpu


UNITS = ("images", "videos", "samples")
#: what a node's inputs are counted in
UNIT = {
    "curate": "images",
    "recaption": "images",
    "video": "videos",
    "video-raw": "videos",
    "import": "records",
    "mix": "samples",
    "train": "steps",
}
RATE_KINDS = ("curate", "recaption_short", "recaption_detailed", "video", "video-raw", "train")


def load_gpu_rates(path: str | Path) -> GpuRates:
    return load_config(GpuRates, str(path))


def _gpu_rates(path: str | None) -> dict:
    if not path:
        return {}
    if not Path(path).is_file():
        raise ConfigError("--gpu-rates", f"no rates file at {path}", "configs/gpu_rates.yaml")
    rates = load_gpu_rates(path)
    return {
        "usd_per_gpu_hour": dataclasses.asdict(rates.usd_per_gpu_hour),
        "nodes": {k: dataclasses.asdict(v) for k, v in rates.nodes.items()},
    }


def _gpu_price(node: Node, inputs: int | None, n_gpus: int, rates: dict) -> dict:
    """GPU-hours, wall seconds on ``n_gpus`` and dollars at the published rates."""
    table = rates.get("nodes") or {}
    if node.kind == "recaption":
        kinds = [f"recaption_{Path(o).name}" for o in node.outputs]
    else:
        kinds = [node.kind]
    per = [(table.get(k) or {}).get("per_gpu_s") for k in kinds]
    if node.kind == "train":
        t = node.job.train
        inputs = None if inputs is None else inputs * t.batch_size * t.grad_accum  # samples
    if not any(k in table for k in kinds):
        return {"why": "CPU work: not priced on GPUs (its time here is above)"}
    if any(r is None for r in per):
        missing = [k for k, r in zip(kinds, per, strict=True) if r is None]
        return {"why": f"no published per-GPU rate for {', '.join(missing)} in the rates file"}
    if inputs is None:
        return {"why": "inputs unknown"}
    gpu_s = sum(inputs / r for r in per)
    price = (rates.get("usd_per_gpu_hour") or {}).get("value")
    return {
        "gpu_hours": gpu_s / 3600,
        "seconds": gpu_s / n_gpus,
        "usd": None if price is None else gpu_s / 3600 * price,
        "rates": dict(zip(kinds, per, strict=True)),
    }


def make_plan(
    cfg: BuildConfig,
    targets: list[str] | None = None,
    *,
    target_gpus: int | None = None,
    gpu_rates: str | None = None,
    inputs: dict[str, int] | None = None,
    pilot_state: str | None = None,
) -> list[PlanRow]:
    """One row per selected node, in graph order. ``inputs`` replaces counted inputs by node
    name (to price a scale not on disk, e.g. ``{"curate": 746_972_269}``). A node the real build
    never ran takes its rate from ``pilot_state`` (:mod:`vl3data.builder.pilot`) when given."""
    from vl3data.builder.execute import load_graph

    nodes = load_graph(cfg, targets)
    st = statuses(nodes)
    rates = _gpu_rates(gpu_rates) if target_gpus else {}
    expected: dict[str, float] = {}
    rows: list[PlanRow] = []
    for node in nodes:
        got, source = measured(node, cfg.state)
        if got is None and pilot_state:
            got, source = measured(node, pilot_state, own_outputs=False)
            source = f"pilot: {source}" if got else ""
        n_in = (inputs or {}).get(node.name)
        if n_in is None:
            n_in = _count_inputs(node, nodes, expected)
        rate = keep = secs = hours = None
        workers = None
        if got and got["inputs"] and got["wall_s"]:
            rate = got["inputs"] / got["wall_s"]
            keep = got["outputs"] / got["inputs"]
            workers = got["workers"] or os.cpu_count()
        if n_in is not None and rate:
            secs = n_in / rate
            hours = secs * workers / 3600
        outs = None if n_in is None or keep is None else n_in * keep
        if node.kind == "train":
            outs = n_in
        if outs is not None:
            expected[node.name] = outs
        row = PlanRow(
            node=node.name,
            kind=node.kind,
            run=st[node.name].stale,
            why=st[node.name].why,
            unit=UNIT[node.kind],
            inputs=n_in,
            outputs=outs,
            seconds=secs,
            worker_hours=hours,
            rate=rate,
            rate_source=source or "no earlier run",
            workers=workers,
        )
        if target_gpus:
            row.gpu = _gpu_price(node, n_in, target_gpus, rates)
        rows.append(row)
    return rows


def _num(x: float | None, digits: int = 1) -> str:
    if x is None:
        return "?"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{digits}f}" if x != int(x) else f"{int(x)}"


def _dur(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def format_plan(cfg: BuildConfig, rows: list[PlanRow], target_gpus: int | None = None) -> str:
    """The plan as a text table, then the totals of the nodes that would run."""
    head = ["node", "", "inputs", "expected out", "time here", "worker-h", "rate (/s)", "why"]
    lines = [head]
    for r in rows:
        lines.append(
            [
                r.node,
                "run" if r.run else "skip",
                f"{_num(r.inputs)} {r.unit}",
                _num(r.outputs),
                _dur(r.seconds),
                _num(r.worker_hours, 4),
                _num(r.rate, 2),
                r.why,
            ]
        )
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(head))]
    text = [f"{cfg.name}: plan ({sum(r.run for r in rows)} of {len(rows)} nodes would run)"]
    text += [
        "  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines
    ]
    todo = [r for r in rows if r.run]
    if todo:
        known = [r for r in todo if r.seconds is not None]
        text.append(
            f"would run: {_dur(sum(r.seconds for r in known))} and "
            f"{sum(r.worker_hours for r in known):.4f} worker-hours here (nodes one after another)"
            + (
                f"; no rate yet for {', '.join(r.node for r in todo if r.seconds is None)}: "
                "run them once (or a small build) to measure"
                if len(known) < len(todo)
                else ""
            )
        )
    sources = sorted({r.rate_source for r in rows if r.rate})
    markers = [x for x in sources if x.startswith(str(cfg.state))]
    pilot = sorted(
        {str(Path(x.removeprefix("pilot: ")).parent) for x in sources if x.startswith("pilot: ")}
    )
    others = [x for x in sources if x not in markers and not x.startswith("pilot: ")]
    if markers:
        text.append(f"rates measured by earlier runs: {cfg.state}/NODE.json")
    for state in pilot:
        n = sum(1 for r in rows if r.rate and r.rate_source.startswith("pilot: "))
        text.append(
            f"rates of {n} node(s) measured by the pilot: {state}/NODE.json (rough: a small run)"
        )
    if others:
        text.append("rates from stats.json: " + "; ".join(others))
    if target_gpus:
        text.append(f"on {target_gpus} GPUs at published per-GPU rates (docs/SCALE.md):")
        totals = {"all nodes": [0.0, 0.0], "nodes that would run": [0.0, 0.0]}
        for r in rows:
            g = r.gpu
            if "gpu_hours" not in g:
                text.append(f"  {r.node:<16} {g.get('why', '?')}")
                continue
            usd = "" if g["usd"] is None else f", ${g['usd']:,.2f}"
            text.append(
                f"  {r.node:<16} {g['gpu_hours']:,.3f} GPU-hours, {_dur(g['seconds'])} on "
                f"{target_gpus} GPUs{usd}"
            )
            for key in ("all nodes", "nodes that would run") if r.run else ("all nodes",):
                totals[key][0] += g["gpu_hours"]
                totals[key][1] += g["usd"] or 0.0
        for key, (hours, usd) in totals.items():
            text.append(f"  {key}: {hours:,.3f} GPU-hours" + (f", ${usd:,.2f}" if usd else ""))
    return "\n".join(text)
