"""The export's output folder, written atomically: everything goes into a hidden sibling
(``.{name}.export-tmp``) and is renamed into place when complete.

A run killed at any point (kill -9 included) leaves the final folder untouched; the next run of
the same command removes the leftover and writes the same files again. An existing non-empty
output is refused unless ``overwrite``; with it, the old folder is replaced only once the new
one is complete.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path


class OutputExists(RuntimeError):
    """The output folder holds something and ``--overwrite`` was not given."""


def _sibling(out: Path, tag: str) -> Path:
    return out.parent / f".{out.name}.export-{tag}"


class AtomicFolder:
    """``tmp`` to write into; :meth:`commit` renames it to ``out``, :meth:`abort` removes it."""

    def __init__(self, out: str | Path, overwrite: bool = False):
        self.out = Path(out).absolute()
        taken = self.out.exists() and (not self.out.is_dir() or any(self.out.iterdir()))
        if taken and not overwrite:
            raise OutputExists(
                f"{self.out} exists and is not empty; give --overwrite to replace it "
                "(or choose another output folder)"
            )
        self.tmp = _sibling(self.out, "tmp")
        shutil.rmtree(self.tmp, ignore_errors=True)  # a killed run's leftover
        self.tmp.mkdir(parents=True)

    def commit(self) -> Path:
        old = _sibling(self.out, "old")
        shutil.rmtree(old, ignore_errors=True)
        if self.out.is_dir() and not self.out.is_symlink():
            os.rename(self.out, old)
        elif self.out.exists() or self.out.is_symlink():
            self.out.unlink()
        os.rename(self.tmp, self.out)
        shutil.rmtree(old, ignore_errors=True)
        return self.out

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


class JsonList:
    """A JSON list written one element at a time (LLaVA's file), valid only once closed."""

    def __init__(self, path: Path):
        self.path = path
        self.f = open(path, "w", encoding="utf-8")  # noqa: SIM115 (closed in close())
        self.f.write("[")
        self.n = 0

    def write(self, obj: dict) -> None:
        self.f.write(("\n" if not self.n else ",\n") + json.dumps(obj))
        self.n += 1

    def close(self) -> None:
        self.f.write("\n]\n")
        self.f.close()


class JsonLines:
    """One JSON object a line (VideoLLaMA3's ``annotations_*.jsonl``, ``skipped.jsonl``)."""

    def __init__(self, path: Path):
        self.path = path
        self.f = open(path, "w", encoding="utf-8")  # noqa: SIM115 (closed in close())
        self.n = 0

    def write(self, obj: dict) -> None:
        self.f.write(json.dumps(obj) + "\n")
        self.n += 1

    def close(self) -> None:
        self.f.close()
