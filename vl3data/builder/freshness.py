"""When is a node up to date: the freshness rule shared by ``vl3data build`` and the Make targets.

A node is up to date when every one of its outputs carries a build record (``dataset.json`` for a
shard set, ``result.json`` for a trained stage) whose fingerprint equals the node's fingerprint
now: a hash of its config hash and of a fingerprint per input. An input another node writes is
fingerprinted by that node's record (so a rerun that changes nothing upstream changes nothing
downstream); a raw input folder (images, videos, a model) by the names, sizes and modification
times of its files, as Make and ninja do; a raw single file (annotations, text) up to 64 MiB by
its content, so a copy elsewhere (a ``ray job`` working dir) is the same input.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from manifests.configs import digest
from vl3data.builder.graph import Node, producer

RECORD_KEY = "build"
CONTENT_HASH_MAX = 64 * 2**20  # single files up to this size are fingerprinted by content


def record_file(node: Node, output: str) -> Path:
    """The file that carries ``node``'s record in ``output``."""
    return Path(output) / ("result.json" if node.kind == "train" else "dataset.json")


def read_record(node: Node, output: str) -> dict | None:
    path = record_file(node, output)
    try:
        return json.loads(path.read_text()).get(RECORD_KEY)
    except (FileNotFoundError, json.JSONDecodeError, AttributeError):
        return None


def write_record(node: Node, output: str, record: dict) -> None:
    """Add the build record to the output's own metadata file (atomically)."""
    path = record_file(node, output)
    doc = json.loads(path.read_text())
    doc[RECORD_KEY] = record
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def raw_fingerprint(path: str) -> str:
    """Names, sizes and mtimes of the files at ``path`` (a file or a folder, walked)."""
    p = Path(path)
    if not p.exists():
        return "missing"
    if p.is_file():
        st = p.stat()
        if st.st_size <= CONTENT_HASH_MAX:  # an annotation or text file: its bytes, wherever
            h = hashlib.sha256()  # it was copied to (a `ray job` working dir, a new checkout)
            with open(p, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            return h.hexdigest()[:16]
        return digest(["", st.st_size, st.st_mtime_ns])
    h = hashlib.sha256()
    for root, dirs, files in os.walk(p):
        dirs.sort()
        for name in sorted(files):
            f = Path(root) / name
            try:
                st = f.stat()
            except OSError:
                continue
            h.update(f"{f.relative_to(p)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def input_fingerprint(path: str, nodes: list[Node]) -> str:
    """An input written by a node: that node's record fingerprint (``unbuilt`` without one);
    else the raw fingerprint."""
    hit = producer(path, nodes)
    if hit is None:
        return raw_fingerprint(path)
    node, output = hit
    rec = read_record(node, output)
    return rec["fingerprint"] if rec else "unbuilt"


def fingerprint(node: Node, nodes: list[Node]) -> tuple[str, dict[str, str]]:
    """The node's fingerprint now, and the per-input fingerprints it is made of."""
    others = [n for n in nodes if n is not node]
    inputs = {label: input_fingerprint(path, others) for label, path in node.inputs.items()}
    return digest({"kind": node.kind, "config": node.config_hash, "inputs": inputs}), inputs


@dataclass
class Status:
    """Whether a node must run, and why."""

    node: str
    stale: bool
    why: str


def status(node: Node, nodes: list[Node], stale_deps: list[str]) -> Status:
    """Up to date, or stale with the reason (upstream stale, never built, config or input
    changed): the reasons a user reads in ``--plan`` and in the build's log."""
    if stale_deps:
        return Status(node.name, True, f"upstream {', '.join(stale_deps)} will run")
    records = [read_record(node, out) for out in node.outputs]
    if any(r is None for r in records):
        return Status(node.name, True, "not built yet")
    fp, inputs = fingerprint(node, nodes)
    if all(r["fingerprint"] == fp for r in records):
        return Status(node.name, False, "up to date")
    old = records[0]
    if old.get("config_hash") != node.config_hash:
        return Status(node.name, True, "its config changed")
    changed = [k for k, v in inputs.items() if old.get("inputs", {}).get(k) != v]
    if changed:
        return Status(node.name, True, f"input changed: {', '.join(changed)}")
    return Status(node.name, True, "its outputs disagree (an interrupted write)")


def statuses(nodes: list[Node]) -> dict[str, Status]:
    """Every node's status, in graph order (a node downstream of a stale one is stale)."""
    out: dict[str, Status] = {}
    for node in nodes:
        stale_deps = [d for d in node.deps if d in out and out[d].stale]
        out[node.name] = status(node, nodes, stale_deps)
    return out
