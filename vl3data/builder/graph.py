"""The build graph: one node per job (curate, recaption, video per source, mix per stage, train per
stage), an edge wherever one node reads a path another node writes.

Every job config is loaded and validated here, before anything runs: a bad field in any job fails
the whole build up front, naming the job and the field.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.job import Job
from manifests.configs import ConfigError, digest, load_config
from vl3data.builder.config import BuildConfig, JobSpec
from vl3data.jobs import job_named

#: node groups, in the order a user thinks of them; ``--target`` accepts a group or a node
GROUPS = ("syn7m", "video", "import", "mix", "train")


@dataclass
class Node:
    """One job of the build, with everything a worker needs to run it."""

    name: str  # curate, recaption, video.<name>, mix.stage<N>, train.stage<N>
    kind: str  # curate | recaption | video | import | mix | train
    group: str  # one of GROUPS
    job: Any  # the validated job config (CurateConfig, Recipe, TrainConfig, ...)
    outputs: list[str]  # absolute paths; each carries the node's record when done
    inputs: dict[str, str]  # label -> absolute path
    config_hash: str  # what decides the result, less the input paths (they are fingerprinted)
    stage: int = 0  # mix and train: the training stage
    options: dict[str, Any] = field(default_factory=dict)  # shuffle_buffer, num_gpus, ...
    deps: list[str] = field(default_factory=list)  # names of the nodes it reads from


def _abs(path: str) -> str:
    return str(Path(path).expanduser().resolve())


def _load(cls: type, spec: JobSpec, where: str, extra: list[str] | None = None):
    """A job config as the build runs it; errors name the build field and the job field."""
    try:
        return load_config(
            cls, list(spec.config), [*spec.set, *(extra or []), f"output={spec.output}"]
        )
    except ConfigError as exc:
        raise ConfigError(f"{where} ({exc.field})", str(exc).split(": ", 1)[1]) from None


def _job_node(
    job: Job, spec: JobSpec, name: str, group: str, where: str, extra: list[str] | None = None
) -> Node:
    """A data job's node: what it reads and writes, and its hash less the inputs (the build
    fingerprints those by content), all from the job itself. ``where``: the build config's
    field, for errors."""
    cfg = _load(job.config_class, spec, where, extra)
    found = job.inputs(cfg)
    return Node(
        name,
        job.name,
        group,
        cfg,
        [_abs(str(d)) for d in job.outputs(cfg).values()],
        {label: _abs(path) for label, (_, path) in found.items()},
        job.config_hash(cfg, blank=tuple(dotted for dotted, _ in found.values())),
    )


def _recaption_node(cfg: BuildConfig) -> Node:
    """Recaption reads the curate node's output unless its config names another input."""
    given = any(s.startswith("input.path=") for s in cfg.recaption.set)
    extra = [] if given else [f"input.path={cfg.curate.output}"]
    job = job_named("recaption")
    return _job_node(job, cfg.recaption, "recaption", "syn7m", "recaption", extra)


def _mix_node(i: int, spec) -> Node:
    from mixtures.recipe import load_recipe

    where = f"mixtures[{i}]"
    if not Path(spec.recipe).is_file():
        raise ConfigError(f"{where}.recipe", f"no recipe file at {spec.recipe}")
    try:
        plain = load_recipe(spec.recipe, list(spec.set))
        index = {src.name: dotted for dotted, _, src in plain.sources()}
        overrides = list(spec.set)
        for name, path in spec.sources.items():
            if name not in index:
                raise ConfigError(
                    f"{where}.sources.{name}",
                    f"{spec.recipe} has no source named {name!r}",
                    f"its sources: {', '.join(index)}",
                )
            overrides.append(f"{index[name]}.path={_abs(path)}")
        recipe = load_recipe(spec.recipe, overrides)
    except ConfigError as exc:
        if exc.field.startswith(where):
            raise
        raise ConfigError(f"{where} ({exc.field})", str(exc).split(": ", 1)[1]) from None
    shape = copy.deepcopy(dataclasses.asdict(recipe))
    for group in shape["groups"]:
        for src in group["sources"]:
            src["path"] = "<input>"
    return Node(
        f"mix.stage{spec.stage}",
        "mix",
        "mix",
        recipe,
        [_abs(spec.output)],
        {f"source:{src.name}": src.path for _, _, src in recipe.sources()},
        digest({"recipe": shape, "shuffle_buffer": spec.shuffle_buffer}),
        stage=spec.stage,
        options={"shuffle_buffer": spec.shuffle_buffer},
    )


def _train_nodes(cfg: BuildConfig, mixes: dict[int, Node]) -> list[Node]:
    from model.config import TrainConfig

    spec = cfg.train
    extra = [f"stage{n}.recipe={recipe_path(m)}" for n, m in mixes.items()]
    job = _load(TrainConfig, spec, "train", extra)
    out = Path(_abs(job.output))
    full = dataclasses.asdict(job)
    for k in ("output", "log_level", "stage1", "stage2", "stage3", "stage4"):
        full.pop(k)
    local = ("init", "tokenizer", "init_llm", "init_vision")  # fingerprinted as inputs instead
    for k in local:
        if full["model"][k]:
            full["model"][k] = "<input>"
    workers = {"workers": spec.workers} if spec.workers else {}
    nodes = []
    for n in spec.stages:
        stage = dataclasses.asdict(job.stage(n))
        stage["recipe"] = "<input>"
        inputs = {"mixture": _abs(job.stage(n).recipe)}
        if n > 1:
            inputs["start"] = str(out / f"stage{n - 1}" / "final")
        else:
            for k in local:
                if getattr(job.model, k):
                    inputs[k] = _abs(getattr(job.model, k))
            if not (job.model.init or job.model.tokenizer or job.model.init_llm):
                # the BPE is trained on every stage's recipe text (model.train)
                for m in range(1, 5):
                    if job.stage(m).recipe:
                        inputs[f"tokenizer_text:stage{m}"] = _abs(job.stage(m).recipe)
        nodes.append(
            Node(
                f"train.stage{n}",
                "train",
                "train",
                job,
                [str(out / f"stage{n}" / "final")],
                inputs,
                # Ray Train workers change the result (a step takes every worker's batch)
                digest({"train": full, "stage": stage, "n": n, **workers}),
                stage=n,
                options={
                    "num_gpus": spec.num_gpus,
                    "workers": spec.workers,
                    "use_gpu": spec.use_gpu,
                    "cpus_per_worker": spec.cpus_per_worker,
                },
            )
        )
    return nodes


def recipe_path(mix: Node) -> str:
    """Where a mix node writes the recipe it resolved (its sources at this build's paths)."""
    return str(Path(mix.outputs[0]) / "recipe.yaml")


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def producer(path: str, nodes: list[Node]) -> tuple[Node, str] | None:
    """The node (and its output) that writes ``path`` or a folder holding it."""
    for node in nodes:
        for out in node.outputs:
            if _under(path, out):
                return node, out
    return None


def make_graph(cfg: BuildConfig) -> list[Node]:
    """Every node of the build, in an order where each comes after what it reads (raises
    :class:`ConfigError` on a bad job config, two nodes writing one place, or a cycle)."""
    nodes: list[Node] = []
    if cfg.curate:
        nodes.append(_job_node(job_named("curate"), cfg.curate, "curate", "syn7m", "curate"))
    if cfg.recaption:
        nodes.append(_recaption_node(cfg))
    nodes += [
        _job_node(job_named(v.job), v, f"video.{v.name}", "video", f"videos[{v.name}]")
        for v in cfg.videos
    ]
    imports = job_named("import")
    nodes += [
        _job_node(imports, v, f"import.{v.name}", "import", f"imports[{v.name}]")
        for v in cfg.imports
    ]
    mixes = {m.stage: _mix_node(i, m) for i, m in enumerate(cfg.mixtures)}
    nodes += [mixes[n] for n in sorted(mixes)]
    if cfg.train:
        nodes += _train_nodes(cfg, mixes)
    for a in nodes:
        for b in nodes:
            if a is not b and any(_under(x, y) for x in a.outputs for y in b.outputs):
                raise ConfigError(
                    f"{a.name}.output", f"writes into {b.name}'s output", "give each job its own"
                )
    for node in nodes:
        node.deps = []
        for path in node.inputs.values():
            hit = producer(path, [n for n in nodes if n is not node])
            if hit and hit[0].name not in node.deps:
                node.deps.append(hit[0].name)
    return _topological(nodes)


def _topological(nodes: list[Node]) -> list[Node]:
    by_name = {n.name: n for n in nodes}
    done: list[Node] = []
    seen: set[str] = set()
    visiting: set[str] = set()

    def visit(n: Node) -> None:
        if n.name in seen:
            return
        if n.name in visiting:
            raise ConfigError(n.name, "is part of a cycle: it reads what it writes, indirectly")
        visiting.add(n.name)
        for d in n.deps:
            visit(by_name[d])
        visiting.discard(n.name)
        seen.add(n.name)
        done.append(n)

    for n in nodes:
        visit(n)
    return done


def select(nodes: list[Node], targets: list[str] | None) -> list[Node]:
    """The nodes ``targets`` name (groups, node names or name prefixes like ``mix``) and
    everything upstream of them; all nodes without targets."""
    if not targets:
        return nodes
    by_name = {n.name: n for n in nodes}
    wanted: set[str] = set()
    for t in targets:
        hit = [n.name for n in nodes if n.group == t or n.name == t or n.name.startswith(t + ".")]
        if t == "mixtures":
            hit = [n.name for n in nodes if n.group == "mix"]
        if not hit:
            names = sorted({*GROUPS, *by_name})
            raise ConfigError("--target", f"{t!r} names no node", f"one of {', '.join(names)}")
        wanted.update(hit)
    stack = list(wanted)
    while stack:
        for d in by_name[stack.pop()].deps:
            if d not in wanted:
                wanted.add(d)
                stack.append(d)
    return [n for n in nodes if n.name in wanted]
