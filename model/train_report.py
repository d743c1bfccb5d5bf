"""The training report: ``output/report.html`` in the data reports' page style, and
``output/loss.png``.

Loss, learning rates and tokens/s of every stage on one time axis (seconds of training steps,
stage boundaries marked), held-out loss per task and grounding mIoU per stage, the trainable
parameters per stage, the data composition each stage drew from, and a visible warning when the
training loss falls far below the held-out loss (memorisation of a small mixture).

A presentation layer (DESIGN §3): it reads what the loop wrote (each stage's ``result.json`` and
``metrics.jsonl``, and the ``composition.json`` the mixture left beside each stage's recipe) and
nothing reads it back, so it can change without touching training.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from manifests.atomic import write_bytes
from manifests.configs import to_dict
from model.config import TrainConfig
from model.metrics import read_metrics
from model.stages import GROUPS, STAGES
from reports.html import VIEWPORT, duration, esc, img, num, pct, render_page, table
from reports.plots import figure, png_b64

#: The stages table; trainable parameters, learning rates and the held-out evaluation have
#: sections of their own.
REPORT_COLUMNS = ("stage", "recipe", "steps", "first loss", "last loss", "s/step")
REPORT_COLUMNS += ("DiffFP", "image merge", "skipped", "fixed", "ranks in sync")

#: Held-out loss at least this many times the training loss (the mean of a stage's last tenth
#: of steps) is memorisation, not learning: the page warns.
MEMORISATION_RATIO = 2.0
#: ... and at least this far above it in absolute terms (tiny losses are noise).
MEMORISATION_GAP = 0.25
_COLORS = ("#1565c0", "#2e7d32", "#ef6c00", "#6a1b9a")
#: Steps averaged for the tokens/s curve (one step's rate is noisy).
RATE_WINDOW = 5


def _stage_curves(metrics: dict[int, list[dict]]) -> list[dict[str, Any]]:
    """Per stage in order: its steps on the shared time axis (cumulative seconds of training
    steps, each stage starting where the one before ended) with loss, lrs and tokens/s."""
    out, t0 = [], 0.0
    for n, rows in sorted(metrics.items()):
        if not rows:
            continue
        dt = np.array([float(r.get("step_time_s") or 0.0) for r in rows])
        t = t0 + np.cumsum(dt)
        tokens = np.array([float(r.get("tokens") or 0) for r in rows])
        w = min(RATE_WINDOW, len(rows))
        kernel = np.ones(w)
        rate = np.convolve(tokens, kernel, "same") / np.maximum(
            np.convolve(dt, kernel, "same"), 1e-9
        )
        lrs = {g: [float((r.get("lr") or {}).get(g, math.nan)) for r in rows] for g in GROUPS}
        out.append(
            {
                "stage": n,
                "start": t0,
                "end": float(t[-1]),
                "t": t,
                "loss": np.array([float(r["loss"]) for r in rows]),
                "lr": lrs,
                "rate": rate,
            }
        )
        t0 = float(t[-1])
    return out


def curves_png(curves: list[dict[str, Any]], results: dict[int, dict]) -> str:
    """Loss (with each stage's held-out loss as a dash at its end), learning rate per group and
    tokens/s, stacked on one time axis; dashed lines and labels mark where each stage starts."""
    fig = figure(9.6, 7.4)
    axes = fig.subplots(3, 1, sharex=True, gridspec_kw={"height_ratios": [2.2, 1.3, 1.1]})
    ax_loss, ax_lr, ax_rate = axes
    styles = {"vision": "-", "projector": "--", "llm": ":"}
    labelled: set[str] = set()  # a group's legend entry, the first time it is drawn
    for i, c in enumerate(curves):
        color = _COLORS[i % len(_COLORS)]
        ax_loss.plot(c["t"], c["loss"], color=color, lw=1.2, label=f"stage {c['stage']} train")
        ev = (results.get(c["stage"]) or {}).get("eval") or {}
        if isinstance(ev.get("loss"), int | float):
            ax_loss.plot(
                [c["end"]],
                [ev["loss"]],
                marker="D",
                color=color,
                ls="none",
                markeredgecolor="#212121",
                label=f"stage {c['stage']} held-out",
            )
        for g in GROUPS:
            ys = np.array(c["lr"][g])
            if np.isfinite(ys).any() and (ys > 0).any():
                ax_lr.plot(
                    c["t"],
                    np.where(ys > 0, ys, np.nan),
                    color=color,
                    ls=styles.get(g, "-"),
                    lw=1.2,
                    label=None if g in labelled else g,
                )
                labelled.add(g)
        ax_rate.plot(c["t"], c["rate"], color=color, lw=1.2)
        for ax in axes:
            if c["start"] > 0:
                ax.axvline(c["start"], color="#616161", ls="--", lw=0.9)
        ax_loss.annotate(
            f"stage {c['stage']}",
            xy=(c["start"], 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(3, -12),
            textcoords="offset points",
            fontsize=8,
            color="#424242",
        )
    ax_loss.set_ylabel("loss (answer tokens)")
    ax_loss.set_title("Training loss, held-out loss (◆), learning rates and tokens/s", fontsize=10)
    ax_loss.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax_lr.set_ylabel("learning rate")
    if ax_lr.lines:
        ax_lr.set_yscale("log")
        ax_lr.legend(
            fontsize=7,
            title_fontsize=7,
            frameon=False,
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            title="group",
        )
    if curves:  # the axis starts where training did (labels at a stage's start stay inside)
        ax_rate.set_xlim(0, curves[-1]["end"] * 1.02)
    ax_rate.set_ylabel("tokens / s")
    ax_rate.set_xlabel("seconds of training steps (stages in order; dashed: a stage starts)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
    return png_b64(fig)


def loss_plot_png(stages: dict[int, list[float]]) -> bytes:
    """Loss per step, stages side by side on one axis (``loss.png``, beside the report)."""
    import io

    fig = figure(9, 3.6)
    ax = fig.add_subplot()
    offset = 0
    for n, losses in sorted(stages.items()):
        xs = range(offset + 1, offset + len(losses) + 1)
        ax.plot(list(xs), losses, label=f"stage {n}")
        if offset:
            ax.axvline(offset + 0.5, color="#9e9e9e", lw=0.8, ls="--")
        offset += len(losses)
    ax.set_xlabel("step (stages in order)")
    ax.set_ylabel("loss (answer tokens)")
    ax.grid(alpha=0.3)
    if stages:
        ax.legend()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def train_tail_loss(losses: list[float]) -> float | None:
    """The training loss a stage ended at: the mean of its last tenth of steps (at least one)."""
    if not losses:
        return None
    k = max(1, len(losses) // 10)
    return float(np.mean(losses[-k:]))


def memorisation(results: dict[int, dict]) -> list[str]:
    """A warning per stage whose held-out loss is far above its training loss."""
    out = []
    for n, r in sorted(results.items()):
        ev, train = r.get("eval") or {}, train_tail_loss(r.get("losses") or [])
        held = ev.get("loss")
        if train is None or not isinstance(held, int | float):
            continue
        if held >= MEMORISATION_RATIO * train and held - train >= MEMORISATION_GAP:
            out.append(
                f"Stage {n}: training loss {train:.3f} is far below the held-out loss {held:.3f} "
                f"({held / max(train, 1e-9):.1f}x): the model memorises its small mixture rather "
                "than learning what carries over. More data, fewer steps or a lower learning "
                "rate."
            )
    return out


def _recipe_cell(recipe: str) -> str:
    """The recipe's last two path parts (the mixture's folder names it), the whole in a tip."""
    short = "/".join(Path(recipe).parts[-2:]) if recipe else "—"
    return f'<span title="{esc(recipe)}">{esc(short)}</span>'


def _stage_row(n: int, r: dict) -> list[str]:
    on = "on" if r["token_compression"] else "off"
    if r["token_compression"] and "diff_threshold" in r:
        on += f" ({r['diff_threshold']})"
    m = r.get("image_merge_size")  # results written before it was recorded lack it
    merge = f"{m}x{m}" if m else "—"

    def f(v: Any) -> str:
        return "—" if v is None else f"{v:.4f}" if isinstance(v, float) else esc(v)

    return [
        num(n),
        _recipe_cell(str(r.get("recipe") or "")),
        num(r["steps"]),
        f(r.get("first_loss")),
        f(r.get("last_loss")),
        f(r.get("mean_step_time_s")),
        esc(on),
        esc(merge),
        esc(json.dumps(r["skipped"])) if r.get("skipped") else "",
        esc(json.dumps(r["fixed"])) if r.get("fixed") else "",
        "yes" if r.get("in_sync", True) else '<span class="bad">NO</span>',
    ]


def _heldout_html(results: dict[int, dict], warnings: list[str]) -> str:
    """Per stage: its training loss at the end, held-out loss overall and per task, grounding."""
    evals = {n: r.get("eval") or {} for n, r in sorted(results.items())}
    tasks = sorted({t for ev in evals.values() for t in (ev.get("loss_by_task") or {})})
    if not any("loss" in ev for ev in evals.values()):
        return (
            '<p class="muted">No held-out evaluation: data.holdout_fraction is 0, or no stage '
            "finished.</p>"
        )
    head = [("stage", True), ("samples", True), ("train loss (end)", True)]
    head += [("held-out loss", True), ("held-out / train", True)]
    head += [(f"held-out {t}", True) for t in tasks]
    head += [("grounding mIoU", True), ("R@0.5", True), ("unparsed", True)]
    rows = []
    for n, ev in evals.items():
        train = train_tail_loss(results[n].get("losses") or [])
        held = ev.get("loss")
        ratio = held / train if isinstance(held, int | float) and train else None
        flag = ratio is not None and any(w.startswith(f"Stage {n}:") for w in warnings)
        g = ev.get("grounding") or {}
        rows.append(
            [
                num(n),
                num(ev.get("samples")),
                "—" if train is None else f"{train:.3f}",
                "—" if held is None else f"{held:.3f}",
                "—"
                if ratio is None
                else (f'<span class="bad">{ratio:.1f}x</span>' if flag else f"{ratio:.1f}x"),
                *[
                    "—"
                    if (ev.get("loss_by_task") or {}).get(t) is None
                    else f"{ev['loss_by_task'][t]:.3f}"
                    for t in tasks
                ],
                "—" if g.get("mIoU") is None else f"{g['mIoU']:.1f}",
                "—" if g.get("R@0.5") is None else f"{g['R@0.5']:.1f}",
                "—" if g.get("unparsed") is None else num(g["unparsed"]),
            ]
        )
    warn = "".join(f'<p class="bad warn">⚠ {esc(w)}</p>' for w in warnings)
    return warn + table(head, rows)


def _params_html(results: dict[int, dict]) -> str:
    """Trainable parameters (and learning rate) per group and stage."""
    head = [("stage", True)]
    for g in GROUPS:
        head += [(f"{g} trainable", True), (f"{g} lr", True)]
    head += [("trainable in all", True)]
    rows = []
    for n, r in sorted(results.items()):
        params, lrs = r.get("parameters") or {}, r.get("lr") or {}
        row, total, trainable = [num(n)], 0, 0
        for g in GROUPS:
            p = params.get(g) or {}
            total += int(p.get("total") or 0)
            trainable += int(p.get("trainable") or 0)
            t = p.get("trainable")
            row.append(
                "—"
                if t is None
                else f"{t:,} <span class='muted'>({pct(t, int(p.get('total') or 0))})</span>"
            )
            row.append("—" if lrs.get(g) is None else f"{lrs[g]:g}")
        row.append(f"{trainable:,} of {total:,}")
        rows.append(row)
    return table(head, rows)


def _composition_path(cfg: TrainConfig, n: int, r: dict) -> Path | None:
    """``composition.json`` of the mixture the stage read (beside its recipe), if there."""
    recipe = r.get("recipe") or cfg.stage(n).recipe
    if not recipe:
        return None
    path = Path(recipe).parent / "composition.json"
    return path if path.is_file() else None


def _data_html(cfg: TrainConfig, results: dict[int, dict], metrics: dict[int, list]) -> str:
    """What each stage drew from: its mixture's groups and sources with their share of an
    epoch, and the samples the stage drew in all (so, about how many of each)."""
    parts = []
    for n, r in sorted(results.items()):
        drawn = sum(int(row.get("samples") or 0) for row in metrics.get(n, []))
        path = _composition_path(cfg, n, r)
        title = (
            f"Stage {n} <span class='muted'>— {esc(r.get('recipe'))}, {num(drawn)} samples drawn"
        )
        if path is None:
            parts.append(
                f"<h3>{title}</span></h3><p class='muted'>No composition.json beside the "
                "recipe: the mixture was not written by the mixtures job.</p>"
            )
            continue
        try:
            rows = json.loads(path.read_text(encoding="utf-8"))["composition"]
        except (OSError, ValueError, KeyError, TypeError):
            parts.append(f"<h3>{title}</span></h3><p class='muted'>{esc(path)} is unreadable.</p>")
            continue
        epoch = sum(int(x.get("epoch_samples") or 0) for x in rows if x.get("level") == "group")
        body = []
        for x in rows:
            share = (x.get("epoch_samples") or 0) / epoch if epoch else 0.0
            is_group = x.get("level") == "group"
            name = (
                f"<b>{esc(x.get('group'))}</b>" if is_group else f"&nbsp;&nbsp;{esc(x['source'])}"
            )
            body.append(
                [
                    name,
                    num(x.get("epoch_samples")),
                    f"{100 * share:.1f} %",
                    num(round(share * drawn)),
                ]
            )
        epochs = f", {drawn / epoch:.2f} epochs" if epoch else ""
        head = [
            ("group / source", False),
            ("samples per epoch", True),
            ("share", True),
            ("drawn (about)", True),
        ]
        parts.append(f"<h3>{title}{epochs}</span></h3>{table(head, body)}")
    return "".join(parts) or '<p class="muted">No stage has run.</p>'


def write_report(cfg: TrainConfig, results: dict[int, dict]) -> Path:
    """``output/report.html`` (and ``loss.png``) for ``results`` and the stages finished by
    earlier runs."""
    out = Path(cfg.output)
    results = dict(results)
    for n in STAGES:  # stages finished by earlier runs too
        done = out / f"stage{n}" / "final" / "result.json"
        if n not in results and done.is_file():
            results[n] = json.loads(done.read_text())
    metrics = {
        n: read_metrics(out / f"stage{n}" / "metrics.jsonl")
        for n in STAGES
        if (out / f"stage{n}" / "metrics.jsonl").is_file()
    }
    png = loss_plot_png({n: [r["loss"] for r in rows] for n, rows in metrics.items()})
    write_bytes(out / "loss.png", png)

    warnings = memorisation(results)
    curves = _stage_curves(metrics)
    steps = sum(int(r.get("steps") or 0) for r in results.values())
    seconds = curves[-1]["end"] if curves else None
    tokens = sum(float(row.get("tokens") or 0) for rows in metrics.values() for row in rows)
    last = results[max(results)] if results else {}
    held = (last.get("eval") or {}).get("loss")
    cards = [
        ("", f"{len(results)} of {len(STAGES)}", "stages run"),
        ("", num(steps), "steps"),
        ("", esc(duration(seconds)) if seconds is not None else "—", "training steps took"),
        ("", num(round(tokens / seconds)) if seconds else "—", "tokens / s (mean)"),
        ("kept", "—" if last.get("last_loss") is None else f"{last['last_loss']:.3f}", "last loss"),
        ("dropped" if warnings else "kept", "—" if held is None else f"{held:.3f}", "held-out"),
    ]
    card_html = "".join(
        f'<div class="card {c}"><div class="v">{v}</div><div class="l">{lab}</div></div>'
        for c, v, lab in cards
    )
    header = (
        f"<h1>{esc(cfg.name)} — training</h1>"
        f'<div class="sub">preset <b>{esc(cfg.model.preset)}</b> · output '
        f"<code>{esc(out)}</code></div>"
        f'<div class="cards" id="counts">{card_html}</div>'
    )
    rows = [_stage_row(n, r) for n, r in sorted(results.items())]
    numeric = {"stage", "steps", "first loss", "last loss", "s/step"}
    stage_table = table([(h, h in numeric) for h in REPORT_COLUMNS], rows)
    if curves:
        bounds = ", ".join(f"stage {c['stage']} {c['start']:.1f}–{c['end']:.1f} s" for c in curves)
        plot = img(curves_png(curves, results), "image/png", "plot curves", "training curves")
        curve_html = (
            f'<p class="muted">Time: seconds of training steps ({esc(bounds)}); tokens/s over '
            f"{RATE_WINDOW} steps; learning rate per parameter group (line style).</p>"
            f'<div class="funnel">{plot}</div>'
        )
    else:
        curve_html = '<p class="muted">No metrics yet.</p>'
    sections = [
        ("stages", "Stages", stage_table),
        ("curves", "Loss, learning rates and tokens/s", curve_html),
        ("heldout", "Held-out loss and grounding", _heldout_html(results, warnings)),
        ("parameters", "Trainable parameters", _params_html(results)),
        ("data", "Data each stage drew from", _data_html(cfg, results, metrics)),
    ]
    appendix = (
        "<details><summary>Config</summary><pre>"
        f"{esc(json.dumps(to_dict(cfg), indent=2))}</pre></details>"
    )
    page = render_page(
        f"{cfg.name}: training report",
        header,
        warnings,
        sections,
        extra_css=".warn{background:#ffebee;border:1px solid #ef9a9a;border-radius:6px;"
        "padding:8px 14px}",
        generator="model.train_report",
        head=VIEWPORT,
        notes_id="notes",
        appendix=appendix,
    )
    path = out / "report.html"
    write_bytes(path, page.encode())
    return path


__all__ = ["REPORT_COLUMNS", "curves_png", "loss_plot_png", "memorisation", "write_report"]
