"""``stage{N}/metrics.jsonl``: one JSON row per optimizer step, read back for results and the
report.

Its own module because the loop writes it and resumes it (:func:`truncate_metrics`) while the
report only reads it (:func:`read_metrics`); neither should import the other for that.
"""

from __future__ import annotations

import json
from pathlib import Path

from manifests.atomic import write_bytes


def read_metrics(path: Path) -> list[dict]:
    """The rows of ``path`` in order; none when it does not exist yet."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def truncate_metrics(path: Path, step: int) -> None:
    """Keep the rows of steps up to ``step`` (a resumed run rewrites the later ones)."""
    rows = [r for r in read_metrics(path) if r["step"] <= step]
    write_bytes(path, "".join(json.dumps(r) + "\n" for r in rows).encode())


__all__ = ["read_metrics", "truncate_metrics"]
