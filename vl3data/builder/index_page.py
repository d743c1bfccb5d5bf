"""``OUT/index.html``: one page for a whole build, written at the end of every build (a failed
one too): the build's graph with each node's status, time and counts, and links to every shard
set's report, the mixtures' composition and the training report.

It reads only what the build leaves on disk (each node's marker in the state folder, the
reports and ``composition.json`` files in the outputs), so it tells the truth about nodes built
by earlier runs as well. Offline and self-contained like the data reports, in their page style
(:mod:`reports.html`); the graph is inline SVG, so it needs no image and no script.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from manifests.atomic import write_bytes
from mixtures.page import composition_html
from reports.html import VIEWPORT, duration, esc, num, render_page, table
from vl3data.builder.freshness import Status
from vl3data.builder.graph import GROUPS, Node
from vl3data.builder.run_node import marker_path, read_marker

INDEX_NAME = "index.html"

#: What the index calls a node's state, from its marker and what this run did with it.
RAN, SKIPPED, FAILED, NOT_STARTED, NEVER = "built", "up to date", "failed", "not started", "-"
_STATE_CLASS = {RAN: "kept", SKIPPED: "kept", FAILED: "error", NOT_STARTED: "dropped"}
_STATE_FILL = {RAN: "#e8f5e9", SKIPPED: "#f1f8e9", FAILED: "#ffebee", NOT_STARTED: "#fff3e0"}
_STATE_LINE = {RAN: "#2e7d32", SKIPPED: "#7cb342", FAILED: "#c62828", NOT_STARTED: "#ef6c00"}

EXTRA_CSS = """
.graph{background:#fff;border:1px solid #e0e0e0;border-radius:6px;padding:8px;overflow-x:auto}
.graph svg{max-width:100%;height:auto;display:block}
.links li{margin:3px 0} code{font-size:12px} a{color:#1565c0} td.num{white-space:nowrap}
"""


def index_dir(cfg: Any, nodes: list[Node]) -> Path:
    """Where the index goes: the build's ``paths.out``, else the folder all outputs share."""
    out = (getattr(cfg, "paths", None) or {}).get("out")
    if out:
        return Path(out).expanduser().resolve()
    outs = [o for n in nodes for o in n.outputs]
    return Path(os.path.commonpath(outs)) if outs else Path(cfg.state).resolve().parent


def node_state(
    name: str, marker: dict | None, status: Status | None, ran: set[str], failed: set[str]
) -> str:
    """One word for the node: built now, failed now, up to date, not started, or (a node this
    run did not consider) what its marker says."""
    if name in ran:
        return RAN
    if name in failed:
        return FAILED
    if status is not None:
        return NOT_STARTED if status.stale else SKIPPED
    state = (marker or {}).get("state")
    return {"done": SKIPPED, "failed": FAILED}.get(state, NEVER)


def reports_of(node: Node) -> list[tuple[str, Path]]:
    """(label, file) for what a person opens about the node's outputs, where it exists."""
    found: list[tuple[str, Path]] = []
    if node.kind == "train":  # outputs: OUT/stageN/final; the report covers every stage
        report = Path(node.outputs[0]).parents[1] / "report.html"
        return [("training report", report)] if report.is_file() else []
    for out in map(Path, node.outputs):
        label = out.name
        if (out / "report.html").is_file():
            found.append((f"{label} report", out / "report.html"))
        if node.kind == "mix" and (out / "composition.json").is_file():
            found.append((f"{label} composition.json", out / "composition.json"))
    return found


def _href(target: Path, base: Path) -> str:
    """A link from the index's folder to ``target``: relative, so the folder can move."""
    return Path(os.path.relpath(target, base)).as_posix()


def _layers(nodes: list[Node]) -> dict[str, int]:
    """Each node's column in the graph: one past its deepest dependency."""
    by_name = {n.name: n for n in nodes}
    depth: dict[str, int] = {}

    def d(name: str, seen: tuple[str, ...] = ()) -> int:
        if name not in depth:
            deps = [x for x in by_name[name].deps if x in by_name and x not in seen]
            depth[name] = 1 + max((d(x, (*seen, name)) for x in deps), default=-1)
        return depth[name]

    for n in nodes:
        d(n.name)
    return depth


BOX_H, GAP_X, GAP_Y = 52, 60, 16
#: Rough widths of a character of the box's two lines (13 px bold, 11 px), for its width.
_CHAR_PX = (8.2, 6.6)


def graph_svg(nodes: list[Node], states: dict[str, str], lines: dict[str, str]) -> str:
    """The graph as inline SVG: a column per depth, a box per node (name, state, time and
    counts), an arrow per edge. ``lines``: the second line of text in each box."""
    depth = _layers(nodes)
    box_w = int(
        max(
            [150]
            + [16 + _CHAR_PX[0] * len(n.name) for n in nodes]
            + [16 + _CHAR_PX[1] * len(lines[n.name]) for n in nodes]
        )
    )
    order = {g: i for i, g in enumerate(GROUPS)}
    cols: dict[int, list[Node]] = {}
    for n in sorted(nodes, key=lambda n: (order.get(n.group, 99), n.name)):
        cols.setdefault(depth[n.name], []).append(n)
    pos: dict[str, tuple[int, int]] = {}
    for c, members in cols.items():
        for r, n in enumerate(members):
            pos[n.name] = (10 + c * (box_w + GAP_X), 10 + r * (BOX_H + GAP_Y))
    width = 20 + len(cols) * (box_w + GAP_X) - GAP_X
    height = 20 + max(len(m) for m in cols.values()) * (BOX_H + GAP_Y) - GAP_Y
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="build graph">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#9e9e9e"/></marker>'
        "</defs>",
    ]
    for n in nodes:
        x2, y2 = pos[n.name]
        for dep in n.deps:
            if dep not in pos:
                continue
            x1, y1 = pos[dep]
            a, b = (x1 + box_w, y1 + BOX_H / 2), (x2, y2 + BOX_H / 2)
            mid = (a[0] + b[0]) / 2
            parts.append(
                f'<path d="M{a[0]},{a[1]} C{mid},{a[1]} {mid},{b[1]} {b[0]},{b[1]}" '
                'fill="none" stroke="#9e9e9e" stroke-width="1.3" marker-end="url(#arrow)"/>'
            )
    for n in nodes:
        x, y = pos[n.name]
        st = states[n.name]
        parts.append(
            f'<g class="node" data-node="{esc(n.name)}" data-state="{esc(st)}">'
            f"<title>{esc(n.name)}: {esc(st)}</title>"
            f'<rect x="{x}" y="{y}" width="{box_w}" height="{BOX_H}" rx="6" '
            f'fill="{_STATE_FILL.get(st, "#f5f5f5")}" stroke="{_STATE_LINE.get(st, "#9e9e9e")}" '
            'stroke-width="1.5"/>'
            f'<text x="{x + 8}" y="{y + 19}" font-size="13" font-weight="600" '
            f'font-family="system-ui,sans-serif" fill="#212121">{esc(n.name)}</text>'
            f'<text x="{x + 8}" y="{y + 38}" font-size="11" font-family="system-ui,sans-serif" '
            f'fill="#616161">{esc(lines[n.name])}</text></g>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _composition_html(path: Path) -> str:
    """A mixture's composition.json as a table (:func:`mixtures.page.composition_html`)."""
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))["composition"]
        return composition_html(rows)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return f'<p class="muted">{esc(path.name)} could not be read.</p>'


def render_index(
    cfg: Any,
    nodes: list[Node],
    status: dict[str, Status],
    ran: Iterable[str],
    outcome: str,
    base: Path,
    failed: Iterable[str] = (),
) -> str:
    """The page, in memory. ``status``: each node's freshness before this run; ``ran`` and
    ``failed``: the nodes this run built and those that failed; ``outcome``: one line on how
    the run ended."""
    ran, failed = set(ran), set(failed)
    markers = {n.name: read_marker(cfg.state, n.name) for n in nodes}
    states = {
        n.name: node_state(n.name, markers[n.name], status.get(n.name), ran, failed) for n in nodes
    }
    rows, lines, links, mixes = [], {}, [], []
    for n in nodes:
        m = markers[n.name] or {}
        st = states[n.name]
        measured = m.get("measured") or {}
        wall = m.get("wall_s") if m.get("state") == "done" else None
        counts = (
            f"{num(measured.get('inputs'))} {esc(measured.get('unit', ''))} in, "
            f"{num(measured.get('outputs'))} out"
            if measured and m.get("state") == "done"
            else "—"
        )
        lines[n.name] = st + (f" · {duration(wall)}" if wall is not None else "")
        if measured and m.get("state") == "done":
            lines[n.name] += f" · {measured.get('outputs'):,} {measured.get('unit', '')}"
        found = reports_of(n)
        cells = ", ".join(f'<a href="{esc(_href(p, base))}">{esc(lab)}</a>' for lab, p in found)
        log = marker_path(cfg.state, n.name).with_suffix(".log")
        if log.is_file():
            cells += (", " if cells else "") + f'<a href="{esc(_href(log, base))}">log</a>'
        why = status[n.name].why if n.name in status else ""
        if st == FAILED and m.get("error"):
            why = f'<span class="bad">{esc(m["error"])}</span>'
        else:
            why = esc(why)
        rows.append(
            [
                f"<b>{esc(n.name)}</b>",
                f'<span class="st-{_STATE_CLASS.get(st, "")}">{esc(st)}</span>',
                why,
                esc(duration(wall)) if wall is not None else "—",
                counts,
                esc(", ".join(n.deps)) or "—",
                cells or '<span class="muted">none yet</span>',
            ]
        )
        for lab, p in found:
            links.append((n, lab, p))
        if n.kind == "mix":
            comp = Path(n.outputs[0]) / "composition.json"
            if comp.is_file():
                mixes.append((n, comp))
    head = [
        ("node", False),
        ("status", False),
        ("why", False),
        ("time", True),
        ("counts", False),
        ("reads from", False),
        ("open", False),
    ]
    counts = {s: sum(1 for v in states.values() if v == s) for s in dict.fromkeys(states.values())}
    cards = "".join(
        f'<div class="card {_STATE_CLASS.get(s, "")}"><div class="v">{num(c)}</div>'
        f'<div class="l">{esc(s)}</div></div>'
        for s, c in counts.items()
    )
    header = (
        f"<h1>{esc(cfg.name)} — build</h1>"
        f'<div class="sub">{esc(outcome)} · {len(nodes)} node(s) in the graph · folder '
        f"<code>{esc(base)}</code> · state <code>{esc(cfg.state)}</code></div>"
        f'<div class="cards" id="counts">{cards}</div>'
    )
    legend = (
        '<p class="muted">Columns follow the edges: a node reads what the nodes to its left '
        "write. Green: built in this run or up to date; red: failed; orange: not started.</p>"
    )
    sections = [
        (
            "graph",
            "Build graph",
            f'{legend}<div class="graph">{graph_svg(nodes, states, lines)}</div>'
            f"{table(head, rows)}",
        )
    ]
    by_group: dict[str, list[str]] = {}
    listed: set[Path] = set()
    for n, lab, p in links:
        if p in listed:  # the training report covers every stage: listed once
            continue
        listed.add(p)
        by_group.setdefault(n.group, []).append(
            f'<li><a href="{esc(_href(p, base))}">{esc(n.name)}: {esc(lab)}</a> '
            f'<span class="muted"><code>{esc(_href(p, base))}</code></span></li>'
        )
    if by_group:
        body = "".join(
            f'<h3>{esc(g)}</h3><ul class="links">{"".join(items)}</ul>'
            for g, items in sorted(by_group.items(), key=lambda kv: (*GROUPS, kv[0]).index(kv[0]))
        )
    else:
        body = '<p class="muted">No report has been written yet.</p>'
    sections.append(("reports", "Reports", body))
    if mixes:
        comp = "".join(
            f'<h3>{esc(n.name)} <span class="muted">— <a href="{esc(_href(p, base))}">'
            f"composition.json</a></span></h3>{_composition_html(p)}"
            for n, p in mixes
        )
        sections.append(("mixtures", "Mixtures' composition", comp))
    return render_page(
        f"{cfg.name} — build index",
        header,
        [],
        sections,
        extra_css=EXTRA_CSS,
        generator="vl3data.builder.index_page",
        head=VIEWPORT,
    )


def write_build_index(
    cfg: Any,
    nodes: list[Node],
    status: dict[str, Status],
    ran: Iterable[str],
    outcome: str,
    failed: Iterable[str] = (),
) -> Path:
    """Write ``OUT/index.html`` (through a temp file) and return its path."""
    base = index_dir(cfg, nodes)
    page = render_index(cfg, nodes, status, ran, outcome, base, failed)
    path = base / INDEX_NAME
    write_bytes(path, page.encode("utf-8"))
    return path
