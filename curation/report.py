"""``report.html`` of a curated image shard set: what came in, what was kept, and why the rest
went (and, when the job balanced its data with k-means, how the clusters came out).

The page is put together from the shared kit (:mod:`reports`: header, funnel, reasons,
histograms, contact sheets) plus the cluster sections only the curate job has
(:mod:`curation.report_clusters`). It reads only the job's output folder, so ``vl3data report
OUT`` can rebuild it at any time, on any machine, without Ray or the rest of the curation code.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

from curation.report_cluster_data import (
    CLUSTER_SHEETS,
    QUOTA_REASON,
    cluster_counts,
    cluster_samples,
    cluster_sizes,
    cluster_stats,
    largest_clusters,
)
from curation.report_clusters import cluster_sheets_html, clusters_html
from curation.report_pictures import find_pictures
from curation.report_thresholds import (
    dropped_pictures,
    pick_rows,
    threshold_columns,
    thresholds_html,
)
from manifests.schema import KEPT
from reports.contact_sheets import dropped_html, kept_html
from reports.html import VIEWPORT, esc, render_page
from reports.ledger_summary import (
    ledger_dataset,
    read_footers,
    read_json,
    summarize_ledger,
)
from reports.samples import dropped_thumbs, kept_samples
from reports.sections import funnel_html, header_html, hist_html, reasons_html

__all__ = ["REPORT_NAME", "write_report"]

REPORT_NAME = "report.html"
#: Quota-dropped rows are pictured per cluster: the dropped sheet points there.
_UNPICTURED = {
    QUOTA_REASON: 'no picture reachable here; see <a href="#cluster-samples">samples per '
    "cluster</a>"
}


def _render_html(out: Path, max_thumbs: int) -> str:
    """The page, in memory; what is missing or inconsistent in the folder becomes a note on
    it rather than an exception, since a broken run is when people need the report most."""
    notes: list[str] = []
    # read_json notes why a file is absent (exactly one note); add what the report does instead
    meta = read_json(out / "dataset.json", notes)
    if meta is None:
        notes[-1] += " Shards are found by listing shards/."
    stats = read_json(out / "stats.json", notes)
    if stats is None:
        notes[-1] += " Stage order comes from the ledger; no thresholds or timings."
    footers = read_footers(out)  # every footer once: counts, histograms, where thumbnails are
    dataset = ledger_dataset(out, footers.parts)
    if dataset is None:
        notes.append("The ledger (ledger/part-*.parquet) is missing: no funnel, reasons or scores.")
    summary = summarize_ledger(out, footers)
    samples = kept_samples(out, meta, max_thumbs, notes)
    pictured = ledger_dataset(out, footers.with_thumbs())
    thumbs = (
        dropped_thumbs(pictured, [r["reason"] for r in summary["reasons"]], max_thumbs)
        if pictured is not None
        else {}
    )
    header = header_html(out, summary, stats, meta, notes)
    info = cluster_stats(stats, notes)
    counts = cluster_counts(dataset)
    stats = stats or {}
    sections = [
        ("funnel", "Funnel by stage", funnel_html(summary, stats)),
        ("reasons", "Why rows went", reasons_html(summary)),
    ]
    cluster_sheets = None
    # only for a job that balanced: stats.json says so, or the ledger assigned clusters
    if info is not None or counts:
        before, after, source = cluster_sizes(info, counts)
        sections.append(
            ("clusters", "Clusters", clusters_html(info, before, after, source, counts, notes))
        )
        order = largest_clusters(before, CLUSTER_SHEETS)
        got = (
            cluster_samples(out, dataset, order, notes, counts=counts)
            if dataset is not None and counts is not None
            else {}
        )
        quota_rows = [r for g in got.values() for r in g["dropped"] if r.get("jpeg")]
        have = thumbs.setdefault(QUOTA_REASON, []) if quota_rows else []
        for r in quota_rows[: max(0, max_thumbs - len(have))]:
            have.append({"thumb": r["jpeg"], "source_key": r.get("source_key") or r.get("id")})
        cluster_sheets = (
            "cluster-samples",
            "Samples per cluster",
            cluster_sheets_html(order, before, after, counts, got),
        )
    sections.append(("scores", "Scores and sizes", hist_html(footers, stats)))
    limits = threshold_columns(dataset, stats) if dataset is not None else {}
    if limits:
        picks = pick_rows(dataset, limits)
        find_pictures(out, [r for g in picks.values() for rows in g.values() for r in rows], notes)
        sections.append(("thresholds", "Thresholds by eye", thresholds_html(picks, limits)))
        for reason, rows in dropped_pictures(picks).items():
            have = thumbs.setdefault(reason, [])
            have += rows[: max(0, max_thumbs - len(have))]
    from curation.dedup_report import duplicates_html  # issue 17: dedup and decontam

    if dups := duplicates_html(out, dataset, stats, notes):
        sections.append(("duplicates", "Duplicates and copies of evaluation images", dups))
    sections += [
        ("kept", "Kept samples", kept_html(samples, summary["by_status"].get(KEPT, 0))),
    ]
    if cluster_sheets is not None:
        sections.append(cluster_sheets)
    sections.append(
        ("dropped", "Dropped samples by reason", dropped_html(summary, thumbs, _UNPICTURED))
    )
    notes = list(dict.fromkeys(notes))  # two readers of one broken shard say the same thing
    extras = []
    if meta and meta.get("config"):
        extras.append(
            f"<details><summary>Job config</summary><pre>"
            f"{esc(json.dumps(meta['config'], indent=2, sort_keys=True, default=str))}"
            "</pre></details>"
        )
    if meta and meta.get("versions"):
        extras.append(
            f"<details><summary>Versions</summary><pre>"
            f"{esc(json.dumps(meta['versions'], indent=2, sort_keys=True, default=str))}"
            "</pre></details>"
        )
    return render_page(
        f"{(meta or {}).get('name') or out.name} — curation report",
        header,
        notes,
        sections,
        generator="curation.report",
        head=VIEWPORT,
        notes_id="notes",
        appendix="".join(extras),
    )


def write_report(out_dir: str | Path, *, max_thumbs: int = 24) -> Path:
    """Write ``OUT/report.html`` and return its path.

    Everything is rendered in memory first and lands through a temp file and ``os.replace``,
    so a crash (or a reader opening it mid-write) never sees half a report, and a previous
    report survives a failed rerun.
    """
    out = Path(out_dir)
    if not out.is_dir():
        raise FileNotFoundError(f"{out} is not a directory (expected a curation output folder)")
    text = _render_html(out, max_thumbs)
    target = out / REPORT_NAME
    fd, tmp = tempfile.mkstemp(prefix=".report-", suffix=".html.tmp", dir=out)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; a report is meant to be shared
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return target
