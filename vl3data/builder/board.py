"""The running nodes' progress while a build waits for them.

A node's own output goes to its log, so without this a build says ``start train.stage3`` and
then nothing until the node ends. Each node keeps its latest progress line in a status file
(``engine.progress.status_to``: partitions and images/s with an ETA, the phase it is in, the
training step); the board shows one line per running node. On a terminal the lines are
redrawn in place every ``refresh_s``; elsewhere (a log file, CI) each node's line is printed
at most every ``every_s`` (``VL3DATA_PROGRESS_EVERY_S``, else 30 s), and only when it changed.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from typing import TextIO

from engine.progress import every_s_default

#: how often a terminal's lines are redrawn
REFRESH_S = 1.0


class NodeBoard:
    """Shows ``{node: line}`` for the nodes that are running."""

    def __init__(
        self,
        echo: Callable[[str], None] = print,
        stream: TextIO | None = None,
        every_s: float | None = None,
    ):
        self.echo = echo
        self.stream = stream if stream is not None else sys.stdout
        self.tty = echo is print and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.every_s = every_s_default() if every_s is None else every_s
        self._drawn = 0  # lines on screen (terminal)
        self._said: dict[str, str] = {}  # node -> the last line printed (plain)
        self._last = float("-inf")

    def due(self) -> bool:
        return time.monotonic() - self._last >= (REFRESH_S if self.tty else self.every_s)

    def show(self, lines: dict[str, str], elapsed_s: float) -> None:
        """Draw (terminal) or print (elsewhere) the running nodes' lines."""
        self._last = time.monotonic()
        if self.tty:
            self.clear()
            width = shutil.get_terminal_size((120, 20)).columns - 1
            text = [f"  … {name}: {line}"[:width] for name, line in lines.items()]
            if text:
                self.stream.write("\n".join(text) + "\n")
                self.stream.flush()
            self._drawn = len(text)
            return
        for name, line in lines.items():
            if self._said.get(name) != line:
                self._said[name] = line
                self.echo(f"[{elapsed_s:7.1f}s] … {name}: {line}")

    def clear(self) -> None:
        """Remove the drawn lines (terminal) before another message is printed."""
        if self.tty and self._drawn:
            self.stream.write(f"\x1b[{self._drawn}F\x1b[J")  # up N lines, erase to the end
            self.stream.flush()
            self._drawn = 0
