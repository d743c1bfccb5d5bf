"""``vl3data``: one command, a subcommand per job. Each job reads one YAML config.

vl3data curate configs/curate_local.yaml --set input.path=/data/pool --set output=/data/out
vl3data curate configs/curate_local.yaml --ray-address auto
vl3data video configs/video_activitynet.yaml --set input.videos=/data/v --set output=/data/vout
vl3data recaption configs/recaption_internvl2.yaml --input /data/out --output /data/syn7m
vl3data report /data/out
vl3data export /data/syn7m/short --output /data/vl3_train --format videollama3,llava
vl3data build configs/build_demo.yaml [--plan] [--target syn7m]
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import shlex
import sys
from pathlib import Path

from manifests.configs import ConfigError

log = logging.getLogger("vl3data")


def _setup_logging(level: str) -> None:
    """Our packages log at ``level``; every other library stays at WARNING, so DEBUG shows our
    decisions (plans, retries, thresholds), not a font manager's search."""
    from engine.ray_session import OUR_PACKAGES

    ours = getattr(logging, level.upper(), logging.INFO)
    logging.basicConfig(
        level=max(ours, logging.WARNING),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for name in OUR_PACKAGES:
        logging.getLogger(name).setLevel(ours)


def _job_config(cls: type, args: argparse.Namespace, *extra: str):
    """A job's config from its YAML(s), ``--set`` overrides, ``extra`` overrides and the common
    flags (``--ray-address``, ``--log-level``), validated; logging set to its level."""
    from manifests.configs import load_config

    overrides = [*(args.set or []), *extra]
    if getattr(args, "ray_address", None):
        overrides.append(f"ray.address={args.ray_address}")
    if args.log_level:
        overrides.append(f"log_level={args.log_level}")
    cfg = load_config(cls, args.config, overrides)
    if hasattr(cfg, "ray") and not cfg.ray.address:
        # an embedded Ray serves only this process: keep it on loopback (read at ray import)
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    _setup_logging(cfg.log_level)
    return cfg


def _summary(job, cfg) -> list[str]:
    """One line per output shard set: what came in, what was kept, where the report is."""
    lines = []
    for folder in job.outputs(cfg).values():
        stats = json.loads((folder / "stats.json").read_text())
        doc = json.loads((folder / "dataset.json").read_text())
        extra = ""
        if "frames" in stats:
            extra = f"; {stats['frames']} frames"
        elif "per_worker" in stats:
            extra = f"; {stats['per_worker']['output_tokens_per_s']} output tokens/s per worker"
        lines.append(
            f"{folder}: {stats['inputs']} {job.unit} -> {stats['kept']} kept, "
            f"{stats['dropped']} dropped, {stats['error']} errors; {doc['samples']} samples in "
            f"{len(doc['shards'])} shards{extra}; report: {folder}/report.html"
        )
    return lines


def _cmd_job(args: argparse.Namespace) -> int:
    """Any data job: its config, then the engine's skeleton (``engine.job.run_job``)."""
    from engine.job import run_job

    job = args.job
    extra = [f"input.path={args.input}"] if getattr(args, "input", None) else []
    extra += [f"output={args.output}"] if getattr(args, "output", None) else []
    cfg = _job_config(job.config_class, args, *extra)
    if getattr(args, "plan", False):
        from recaption.plan import plan_main

        print(plan_main(cfg))
        return 0
    cfg.check_runnable()
    out = Path(cfg.output)
    made = not out.exists()
    try:
        run_job(job, cfg, restart=args.restart, progress=not args.no_progress)
    except BaseException:
        if made:  # refused before any work (a missing input): no empty output folder behind
            _remove_if_unused(out)
        raise
    for line in _summary(job, cfg):
        print(line)
    return 0


def _remove_if_unused(out: Path) -> None:
    """Remove ``out`` (a folder this run made) when it holds nothing but folders and the
    output lock: a run refused before its first piece of work leaves nothing behind."""
    from engine.job import LOCK

    if not out.is_dir():
        return
    for _root, _dirs, files in os.walk(out):
        if any(f != LOCK for f in files):
            return
    import shutil

    shutil.rmtree(out, ignore_errors=True)


#: what makes a folder a shard set (or the remains of a run that was writing one)
SHARD_SET_MARKS = ("dataset.json", "stats.json", "ledger", "shards")
#: dataset.json's ``task`` of a materialised mixture (``mixtures.materialise``)
MIXTURE_TASK = "mixture"


def _read_json(path: Path) -> dict:
    """A JSON file's object; {} when it is missing or unreadable (a set a crash left)."""
    from reports.ledger_summary import read_json

    return read_json(path) or {}


def guess_writer(doc: dict, stats: dict) -> str:
    """The data job that wrote a set whose stats.json does not say (written before it did),
    from what its files hold; curate when they tell nothing."""
    task = str(doc.get("task") or "")
    if task.startswith("import_"):
        return "import"
    if task.startswith("caption_") or "subset" in stats:
        return "recaption"
    if doc.get("modality") == "video" or "frames" in stats:
        raw = "scenes" in (doc.get("config") or {}) or "scenes" in stats
        return "video-raw" if raw else "video"
    return "curate"


def report_writer(out: Path) -> str:
    """The name of the data job whose report ``vl3data report OUT`` draws: the one
    ``stats.json: job`` records, else a guess from the files (said in one log line)."""
    from vl3data.jobs import DATA_JOBS

    names = [j.name for j in DATA_JOBS]
    doc, stats = _read_json(out / "dataset.json"), _read_json(out / "stats.json")
    recorded = stats.get("job")
    if recorded in names:
        return recorded
    name = guess_writer(doc, stats)
    why = "no job recorded" if recorded is None else f"unknown job {recorded!r}"
    log.info("%s: stats.json has %s; drawing the %s report (from its files)", out, why, name)
    return name


def _cmd_report(args: argparse.Namespace) -> int:
    """(Re)write OUT/report.html: the report of the data job that wrote OUT."""
    from vl3data.jobs import DATA_JOBS, job_named

    _setup_logging(args.log_level or "INFO")
    out = Path(args.out)
    if not out.is_dir():
        print(f"vl3data: error: {out} is not a directory (give a shard set's)", file=sys.stderr)
        return 1
    if not any((out / m).exists() for m in SHARD_SET_MARKS):
        sets = sorted(d.name for d in out.iterdir() if (d / "dataset.json").is_file())
        jobs = ", ".join(j.name for j in DATA_JOBS)
        hint = f"; its shard sets: {', '.join(str(out / s) for s in sets)}" if sets else ""
        print(
            f"vl3data: error: {out} is not a shard set (none of {', '.join(SHARD_SET_MARKS)} "
            f"in it); give a shard set written by one of {jobs}{hint}",
            file=sys.stderr,
        )
        return 1
    if _read_json(out / "dataset.json").get("task") == MIXTURE_TASK:
        from mixtures.page import write_mixture_report

        write_mixture_report(out)  # composition, tokens and samples: from its own files
    else:
        job_named(report_writer(out)).report(out)
    print(out / "report.html")
    return 0


def _cmd_mix(args: argparse.Namespace) -> int:
    from mixtures.recipe import check_recipe, load_recipe

    _setup_logging(args.log_level or "INFO")
    recipe = load_recipe(args.recipe, args.set or [])
    notes: list[str] = []
    problems = check_recipe(recipe, notes)
    from mixtures.report import format_composition, format_tokens, mixture_report
    from mixtures.sampler import build_plan, format_summary

    if problems:  # missing or empty sources, amounts that cannot be met (and by how much)
        print(f"{args.recipe}: {len(problems)} problem(s)", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        return 1
    total = "" if recipe.total is None else f", total {recipe.total:,}"
    print(f"{recipe.stage} (seed {recipe.seed}{total})")
    for note in notes:  # oversampling by how much, amounts that do not add up to total
        print(f"note: {note}")
    plan = build_plan(recipe)
    print(format_summary(plan))
    report = mixture_report(recipe, plan, notes)
    print()
    print(format_composition(report["composition"]))
    print()
    print(format_tokens(report["tokens"]))
    if args.check:
        return 0
    if not args.output:
        print("vl3data: error: give --output OUT to write the mixture, or --check", file=sys.stderr)
        return 2
    from mixtures.materialise import write_mixture

    doc = write_mixture(recipe, args.output, shuffle_buffer=args.shuffle_buffer, report=report)
    print(f"{args.output}: {doc['samples']} samples in {len(doc['shards'])} shards")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    """A shard set or materialised mixture in VideoLLaMA3's and/or LLaVA's layout."""
    from export.run import export_shard_set

    _setup_logging(args.log_level or "INFO")
    layouts = [f for spec in args.format or ["videollama3"] for f in spec.split(",") if f]
    doc = export_shard_set(args.input, args.output, layouts, overwrite=args.overwrite)
    out = Path(args.output)
    for lay, r in doc["layouts"].items():
        skipped = sum(r["skipped"].values())
        why = "".join(f", {k} {v}" for k, v in r["skipped"].items())
        files = ", ".join(f"{out / name} {n}" for name, n in r["files"].items())
        print(f"{lay}: {r['records']} records ({files or 'none'}); {skipped} skipped{why}")
    print(
        f"{out / doc['media_folder']}: {doc['images']} images, {doc['videos']} videos "
        f"({doc['frames']} frames); skipped samples listed in {out / doc['skipped_file']}"
    )
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from model.config import TrainConfig
    from model.loop import run
    from model.train import launch_with_ray, parse_stages

    if args.ray_address and not args.ray_workers:
        print("vl3data train: --ray-address goes with --ray-workers N", file=sys.stderr)
        return 2
    if args.ray_workers:
        _setup_logging(args.log_level or "INFO")
        overrides = [*(args.set or [])] + (
            [f"log_level={args.log_level}"] if args.log_level else []
        )
        summary = launch_with_ray(args, overrides)
    else:
        cfg = _job_config(TrainConfig, args)
        summary = run(cfg, parse_stages(args.stage), resume=args.resume)
    if "report" not in summary:  # not the main rank of a torchrun
        return 0
    for n, r in summary["stages"].items():
        state = "done" if r["done"] else "stopped (--resume goes on)"
        print(
            f"stage {n}: {r['steps']} steps, loss {r['first_loss']:.4f} -> "
            f"{r['last_loss']:.4f}, {state}"
        )
    return 0


def _cmd_build(args: argparse.Namespace) -> int:
    from manifests.configs import load_config
    from vl3data.builder.config import BuildConfig

    overrides = list(args.set or [])
    if args.ray_address:
        overrides.append(f"ray.address={args.ray_address}")
    if args.log_level:
        overrides.append(f"log_level={args.log_level}")
    cfg = load_config(BuildConfig, args.config, overrides)
    _setup_logging(cfg.log_level)
    targets = [t for spec in args.target or [] for t in spec.split(",") if t]
    if args.pilot is not None and not args.plan:
        print("vl3data build: --pilot goes with --plan", file=sys.stderr)
        return 2
    if args.plan:
        from vl3data.builder.plan import format_plan, make_plan

        counts: dict[str, int] = {}
        for spec in args.inputs or []:
            node, _, n = spec.partition("=")
            if not n.replace("_", "").isdigit():
                print(f"vl3data: --inputs {spec!r}: use NODE=COUNT, e.g. curate=746972269")
                return 2
            counts[node] = int(n.replace("_", ""))
        pilot_state = None
        if args.pilot:
            from vl3data.builder.execute import BuildFailed, run_build
            from vl3data.builder.pilot import PILOT_STEPS, pilot_config

            pilot = pilot_config(args.config, overrides, args.pilot)
            print(
                f"pilot: the first {args.pilot} partition(s) of every raw input, {PILOT_STEPS} "
                f"steps per training stage, in {Path(pilot.paths['out'])}"
            )
            try:
                run_build(pilot, targets)
            except BuildFailed as exc:  # what did run still gives rates
                print(f"pilot: {exc}", file=sys.stderr)
            pilot_state = pilot.state
        rows = make_plan(
            cfg,
            targets,
            target_gpus=args.target_gpus,
            gpu_rates=args.gpu_rates,
            inputs=counts,
            pilot_state=pilot_state,
        )
        print(format_plan(cfg, rows, args.target_gpus))
        return 0
    from vl3data.builder.execute import BuildFailed, run_build

    print(f"{cfg.name}: {', '.join(targets) if targets else 'every node'}")
    try:
        run_build(cfg, targets)
    except BuildFailed as exc:
        print(f"vl3data build: {exc}", file=sys.stderr)
        return 1
    return 0


def _version() -> str:
    """The installed package's version; from the source tree when it is not installed."""
    import importlib.metadata

    try:
        return importlib.metadata.version("vl3data")
    except importlib.metadata.PackageNotFoundError:
        from vl3data import __version__

        return f"{__version__} (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vl3data", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    # the flags every data job shares, from one parent
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "config",
        nargs="+",
        help="YAML config(s); later files override earlier ones "
        "(e.g. configs/syn7m_filters.yaml configs/models/tiny.yaml)",
    )
    common.add_argument(
        "--set",
        action="append",
        metavar="FIELD=VALUE",
        help="override a config field, e.g. --set input.path=/data/pool (repeatable)",
    )
    common.add_argument("--ray-address", help="join a Ray cluster: 'auto' or 'ray://host:10001'")
    common.add_argument(
        "--restart",
        action="store_true",
        help="discard an unfinished or finished run in the output and start over",
    )
    common.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR")
    common.add_argument("--no-progress", action="store_true", help="no progress bars")
    from vl3data.jobs import DATA_JOBS

    for job in DATA_JOBS:
        p = sub.add_parser(job.name, help=job.help, parents=[common])
        if job.name == "recaption":
            p.add_argument("--input", help="a curated shard set (sets input.path)")
            p.add_argument("--output", help="where OUT/short and OUT/detailed go (sets output)")
            p.add_argument(
                "--plan",
                action="store_true",
                help="caption a few input images here and print worker-hours per million images",
            )
        p.set_defaults(func=_cmd_job, job=job)

    p = sub.add_parser("mix", help="check a stage mixture recipe, or write it as shards")
    p.add_argument("recipe", help="e.g. mixtures/recipes/stage1.yaml")
    p.add_argument("--check", action="store_true", help="validate and print the plan only")
    p.add_argument("--output", help="write the mixture as a shard set here")
    p.add_argument(
        "--shuffle-buffer",
        type=int,
        default=10_000,
        help="samples held to shuffle across sources (bounds memory)",
    )
    p.add_argument("--set", action="append", metavar="FIELD=VALUE", help="override a field")
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR")
    p.set_defaults(func=_cmd_mix)

    p = sub.add_parser(
        "export", help="a shard set or mixture as VideoLLaMA3's annotation files or LLaVA's JSON"
    )
    p.add_argument("input", help="a shard set or materialised mixture (a folder with dataset.json)")
    p.add_argument("--output", required=True, help="the folder to write (annotations + media/)")
    p.add_argument(
        "--format",
        action="append",
        metavar="LAYOUT",
        help="videollama3 (default) or llava; both: --format videollama3,llava (docs/EXPORT.md)",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace a non-empty output folder when done"
    )
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("train", help="train a compact VideoLLaMA3 through the four stages")
    p.add_argument("config", nargs="+", help="YAML config(s), e.g. configs/train_compact.yaml")
    p.add_argument(
        "--stage",
        default="all",
        help="all (1 to 4, each from the previous one's weights), 1, 2, 3, 4 or a span 2-4",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="skip finished stages and continue an interrupted one from its latest checkpoint",
    )
    p.add_argument("--set", action="append", metavar="FIELD=VALUE", help="override a field")
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR")
    from model.ray_launch import add_ray_train_args

    add_ray_train_args(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser(
        "build", help="the whole graph (curate, recaption, videos, mixtures, training), stale nodes"
    )
    p.add_argument("config", nargs="+", help="a build YAML, e.g. configs/build_demo.yaml")
    p.add_argument(
        "--target",
        action="append",
        metavar="NODE",
        help="build only these (and what they need): syn7m, video, mix, train, or a node such as "
        "recaption or train.stage2 (repeatable or comma-separated)",
    )
    p.add_argument(
        "--plan",
        action="store_true",
        help="print what would run and its cost (at earlier runs' measured rates); run nothing",
    )
    p.add_argument(
        "--pilot",
        type=int,
        metavar="N",
        help="with --plan: first build the first N partitions of every raw input under "
        "OUT/.pilot, and price nodes that never ran at the pilot's rates",
    )
    p.add_argument(
        "--target-gpus",
        type=int,
        metavar="N",
        help="with --plan: also price the stale nodes on N GPUs at published per-GPU rates",
    )
    p.add_argument(
        "--inputs",
        action="append",
        metavar="NODE=COUNT",
        help="with --plan: price this many inputs for a node instead of counting them "
        "(e.g. curate=746972269 for COYO-700M)",
    )
    p.add_argument(
        "--gpu-rates",
        default="configs/gpu_rates.yaml",
        help="published per-GPU rates for --target-gpus (default: %(default)s)",
    )
    p.add_argument("--set", action="append", metavar="FIELD=VALUE", help="e.g. paths.out=/mnt/out")
    p.add_argument("--ray-address", help="join a Ray cluster: 'auto' or '127.0.0.1:6379'")
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR")
    p.set_defaults(func=_cmd_build)

    p = sub.add_parser(
        "report", help="(re)write OUT/report.html: the report of the job that wrote the set"
    )
    p.add_argument("out", help="a shard set: curate's output, or one set of another job's")
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR")
    p.set_defaults(func=_cmd_report)
    return parser


#: exit status of a run stopped by Ctrl-C (128 + SIGINT, as shells report it)
INTERRUPTED = 130
_NO_WRITE = {errno.EACCES, errno.EPERM, errno.EROFS}
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}


def _os_error_line(exc: OSError) -> str:
    """One line for a failed file operation: what, where, and what to do about it."""
    where = f" {exc.filename}" if exc.filename else ""
    what = exc.strerror or str(exc)
    if exc.errno in _NO_SPACE:
        fix = "free space there (or choose another output), then rerun the same command: "
        fix += "finished partitions are kept"
        return f"vl3data: error: cannot write{where}: {what}; {fix}"
    if exc.errno in _NO_WRITE:
        fix = "choose an output folder you can write to (--set output=...)"
        return f"vl3data: error: cannot write{where}: {what}; {fix}"
    return f"vl3data: error: {type(exc).__name__}{where}: {what}"


def main(argv: list[str] | None = None) -> int:
    """The command. Called without ``argv`` (the ``vl3data`` console command), the process
    ends right after: its outputs are written (atomically, fsynced), Ray is stopped, and
    tearing the interpreter down costs about 0.4 s at the end of every run; after a Ctrl-C it
    would wait for thread pools whose downloads stall until their deadline."""
    code = _main(argv)
    if argv is None:
        _stop_leftover_ray()
        sys.stdout.flush()
        sys.stderr.flush()
        logging.shutdown()
        os._exit(code)
    return code


def _stop_leftover_ray() -> None:
    """A Ray this process started and nobody stopped (a build's, a training's) is stopped here,
    as Ray's own exit hook would have: ``os._exit`` runs no exit hooks. A data job's Ray is
    already stopped (``engine.job.run_job``), by its own thread when it started in the
    background, which may still be finishing after a Ctrl-C: that one is left to it."""
    from engine import ray_start

    ray = sys.modules.get("ray")
    if ray_start.begun() or ray is None or not ray.is_initialized():
        return
    ray.shutdown()


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"vl3data: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        again = shlex.join(["vl3data", *(sys.argv[1:] if argv is None else argv)])
        print(
            "vl3data: interrupted. Finished partitions (and finished nodes of a build) are kept; "
            f"run the same command again to resume: {again}",
            file=sys.stderr,
        )
        return INTERRUPTED
    except Exception as exc:
        from engine.runner import task_cause  # a Ray task error: the worker's own exception

        cause = task_cause(exc)
        if isinstance(cause, OSError) and not isinstance(cause, FileNotFoundError):
            print(_os_error_line(cause), file=sys.stderr)
            return 1
        if isinstance(cause, (FileNotFoundError, RuntimeError, ValueError)):
            print(f"vl3data: error: {cause}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
