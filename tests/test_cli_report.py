"""``vl3data report OUT`` draws the report of the job that wrote OUT, whichever job that was:
``stats.json: job`` (written for every job by engine/finish.py) names it. A set written before
the job was recorded gets the report its files point to, said in one log line; a mixture gets
its own page (mixtures.page). The sets are the session's,
made by the real jobs (tests/conftest.py ``job_sets``), each copied before its report is
redrawn."""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import pytest

from vl3data.cli import guess_writer, main

#: the module each job's report names at its foot ("Report generated ... by MODULE.")
GENERATORS = {
    "curate": "curation.report",
    "video": "video_prep.report",
    "video-raw": "video_prep.raw_report",
    "recaption": "recaption.report",
    "import": "ingest.report",
}


def _copy(src: Path, root: Path) -> Path:
    """A copy of the set ``src`` under ``root``, without its report."""
    out = root / src.name
    shutil.copytree(src, out)
    (out / "report.html").unlink(missing_ok=True)
    return out


def _drawn_by(out: Path) -> str:
    html = (out / "report.html").read_text()
    found = re.search(r"Report generated [^<]* by ([\w.]+)\.</p>", html)
    assert found, f"{out / 'report.html'} has no generator line"
    return found.group(1)


def _stats(out: Path) -> dict:
    return json.loads((out / "stats.json").read_text())


@pytest.fixture(scope="module")
def text_import(tmp_path_factory, ray_local) -> Path:
    """``vl3data import``'s text set of a JSON list of chats (one partition)."""
    from tests.ingest.inputs import text_inputs

    root = tmp_path_factory.mktemp("text_import")
    out = root / "out"
    argv = ["import", "configs/import_text.yaml", "--no-progress"]
    argv += [f"--set=input.annotations={text_inputs(root)}", f"--set=output={out}"]
    assert main(argv) == 0
    return out / "text"


@pytest.fixture()
def sets(job_sets, text_import) -> dict[str, Path]:
    return {**job_sets, "import": text_import}


@pytest.mark.parametrize(
    "kind, job",
    [("image", "curate"), ("video", "video"), ("grounding", "video"), ("import", "import")],
)
def test_report_draws_the_page_of_the_job_that_wrote_the_set(sets, kind, job, tmp_path, capsys):
    out = _copy(sets[kind], tmp_path)
    assert _stats(out)["job"] == job
    assert main(["report", str(out)]) == 0
    assert capsys.readouterr().out == f"{out / 'report.html'}\n"
    assert _drawn_by(out) == GENERATORS[job]


@pytest.mark.parametrize(
    "kind, job, recorded",
    [("image", "curate", None), ("video", "video", None), ("video", "video", "video-v0")],
)
def test_a_set_without_a_known_job_gets_the_page_its_files_point_to(
    job_sets, kind, job, recorded, tmp_path, caplog
):
    """A set written before stats.json named its job (or naming one no longer known)."""
    out = _copy(job_sets[kind], tmp_path)
    stats = {k: v for k, v in _stats(out).items() if k != "job"}
    if recorded:
        stats["job"] = recorded
    (out / "stats.json").write_text(json.dumps(stats))
    with caplog.at_level(logging.INFO, logger="vl3data"):
        assert main(["report", str(out)]) == 0
    assert _drawn_by(out) == GENERATORS[job]
    said = [r.getMessage() for r in caplog.records if str(out) in r.getMessage()]
    assert len(said) == 1 and f"the {job} report" in said[0], said
    assert ("no job recorded" if recorded is None else repr(recorded)) in said[0]


@pytest.mark.parametrize(
    "doc, stats, job",
    [
        # what each job's finish writes that tells it apart (dataset.json's task and config,
        # stats.json's head and fields of its own)
        ({"task": "curated_images", "modality": "image"}, {"stages": []}, "curate"),
        ({"task": "caption_short", "modality": "image"}, {"subset": "short"}, "recaption"),
        ({"task": "caption", "modality": "video", "config": {"input": {}}}, {"frames": 9}, "video"),
        (
            {"task": "caption", "modality": "video", "config": {"scenes": {}}},
            {"frames": 9, "scenes": {}},
            "video-raw",
        ),
        ({"task": "import_videollama3", "modality": "video"}, {"frames": 9}, "import"),
        ({}, {}, "curate"),  # nothing to tell by: curation's page, which notes what is missing
    ],
)
def test_the_guess_for_a_set_without_a_job(doc, stats, job):
    assert guess_writer(doc, stats) == job


def test_a_mixture_gets_its_own_page(job_sets, tmp_path, capsys):
    """A mixture's page (mixtures.page); this one was materialised without its composition.json
    (as `materialise` alone writes it), which the page says instead of failing."""
    out = _copy(job_sets["mixed"], tmp_path)
    assert main(["report", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out / "report.html")
    assert _drawn_by(out) == "mixtures.page"
    html = (out / "report.html").read_text()
    assert "composition.json is missing" in html and 'id="samples"' in html


def test_a_jobs_output_folder_is_refused_naming_its_sets(job_sets, tmp_path, capsys):
    """``vl3data report`` on the video job's OUT (not a set: its sets are in it)."""
    out = tmp_path / "video"
    shutil.copytree(job_sets["video"].parent, out)
    assert main(["report", str(out)]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "not a shard set" in line
    assert all(str(out / s) in line for s in ("caption", "grounding", "streaming"))
