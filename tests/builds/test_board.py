"""The running nodes' progress during a build: redrawn in place on a terminal, plain lines (only
when changed) in a log."""

from __future__ import annotations

import io

from vl3data.builder.board import NodeBoard


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_off_a_terminal_each_node_line_is_printed_when_it_changes():
    said: list[str] = []
    board = NodeBoard(said.append, stream=io.StringIO(), every_s=0)
    assert board.due()
    board.show({"curate": "write: 1/4 partitions, 10/40 images, 5.0 images/s, ETA 6 s"}, 3.0)
    board.show({"curate": "write: 1/4 partitions, 10/40 images, 5.0 images/s, ETA 6 s"}, 4.0)
    board.show({"curate": "write: 2/4 partitions", "train.stage1": "stage 1: step 3/10"}, 5.0)
    assert said == [
        "[    3.0s] … curate: write: 1/4 partitions, 10/40 images, 5.0 images/s, ETA 6 s",
        "[    5.0s] … curate: write: 2/4 partitions",
        "[    5.0s] … train.stage1: stage 1: step 3/10",
    ]


def test_off_a_terminal_lines_wait_for_the_period():
    board = NodeBoard(lambda _: None, stream=io.StringIO(), every_s=3600)
    board.show({"curate": "x"}, 1.0)
    assert not board.due()


def test_on_a_terminal_the_lines_are_redrawn_in_place():
    term = _Terminal()
    board = NodeBoard(print, stream=term)
    assert board.tty
    board.show({"curate": "write: 1/4 partitions", "video.demo": "videos: 0/3 partitions"}, 1.0)
    first = term.getvalue()
    assert first == "  … curate: write: 1/4 partitions\n  … video.demo: videos: 0/3 partitions\n"
    board.show({"curate": "write: 2/4 partitions"}, 2.0)
    # up two lines and erase them, then the one line left
    assert term.getvalue()[len(first) :] == "\x1b[2F\x1b[J  … curate: write: 2/4 partitions\n"
    board.clear()
    assert term.getvalue().endswith("\x1b[1F\x1b[J")
    board.clear()  # nothing drawn: nothing written
    assert term.getvalue().endswith("\x1b[1F\x1b[J")
