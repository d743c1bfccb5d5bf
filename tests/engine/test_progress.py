"""Progress in the unit the user thinks in: a bar of images on a terminal, plain periodic lines
elsewhere, partitions only when the plan cannot say how many inputs there are."""

from __future__ import annotations

import io
import logging

from engine import progress
from engine.partitions import Partition
from engine.progress import Progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_partition_knows_its_inputs_when_its_spec_says():
    assert Partition(0, "folder", {"files": ["a.jpg", "b.jpg"]}).inputs() == 2
    assert Partition(1, "videos", {"items": [{}, {}, {}]}).inputs() == 3
    assert Partition(2, "url_parquet", {"file": "p", "offset": 0, "length": 7}).inputs() == 7
    assert Partition(3, "shard_slice", {"shard": "s", "skip": 0, "take": 5}).inputs() == 5
    assert Partition(4, "webdataset", {"tar": "x.tar"}).inputs() is None


def test_on_a_terminal_the_bar_counts_images():
    term = _Terminal()
    with Progress("write", 4, unit="images", total_inputs=40, stream=term) as bar:
        for _ in range(3):
            bar.partition_done(10)
    shown = term.getvalue()
    assert "30/40" in shown and "images" in shown and "3/4 partitions" in shown


def test_without_a_total_the_bar_counts_partitions():
    term = _Terminal()
    with Progress("write", 4, unit="images", stream=term) as bar:
        bar.partition_done(10)
    assert "1/4" in term.getvalue() and "part" in term.getvalue()


def test_off_a_terminal_it_logs_plain_lines_with_rate_and_eta(caplog):
    log_file = io.StringIO()  # not a terminal: a log file, a CI job, a build node
    with caplog.at_level(logging.INFO, logger="engine.progress"):
        with Progress("write", 4, unit="images", total_inputs=40, every_s=0, stream=log_file) as p:
            p.partition_done(10)
            p.partition_done(10)
        lines = [r.getMessage() for r in caplog.records]
    assert log_file.getvalue() == ""  # no carriage-return bar in a log
    assert lines[0].startswith("write: 1/4 partitions, 10/40 images, ")
    assert "images/s, ETA " in lines[0]
    assert lines[1].startswith("write: 2/4 partitions, 20/40 images, ")
    assert lines[-1].startswith("write: 2 partitions, 20 images in ")  # the closing summary


def test_plain_lines_come_at_most_every_period(caplog):
    with caplog.at_level(logging.INFO, logger="engine.progress"):
        p = Progress("write", 100, unit="images", every_s=3600, stream=io.StringIO())
        for _ in range(50):
            p.partition_done(1)
    assert [r for r in caplog.records if "partitions," in r.getMessage()] == []


def test_a_status_file_holds_the_latest_line_and_phase(tmp_path, monkeypatch):
    """What a build shows for a running node: the pass's line as partitions finish (at most
    once a second), the phase the job is in, nothing once the node stops keeping it."""
    status = tmp_path / "node.status"
    clock = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    progress.status_to(status)
    try:
        with Progress("write", 4, unit="images", total_inputs=40, stream=io.StringIO()) as p:
            assert progress.read_status(status).startswith("write: 0/4 partitions, 0/40 images")
            p.partition_done(10)  # within the second after the first write: not rewritten
            assert progress.read_status(status).startswith("write: 0/4 partitions")
            clock[0] += 1.5
            p.partition_done(10)
            assert progress.read_status(status).startswith("write: 2/4 partitions, 20/40 images")
            assert "images/s, ETA " in progress.read_status(status)
            p.partition_done(10)  # throttled again...
        # ...but the pass's last line always lands
        assert progress.read_status(status).startswith("write: 3/4 partitions, 30/40 images")
        progress.status("curate: writing the report", say=False)  # a phase: written at once
        assert progress.read_status(status) == "curate: writing the report"
    finally:
        progress.status_to(None)
    progress.status("after the node", say=False)
    assert progress.read_status(status) == "curate: writing the report"  # no longer kept
    assert progress.read_status(tmp_path / "missing.status") is None


def test_the_plain_period_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv(progress.EVERY_ENV, "2.5")
    assert Progress("write", 1, stream=io.StringIO()).every_s == 2.5
    monkeypatch.setenv(progress.EVERY_ENV, "soon")
    assert Progress("write", 1, stream=io.StringIO()).every_s == 30.0
