"""Write-to-temp-then-rename, so a crash (kill -9 included) never leaves a half-written file
under its final name."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(path)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def json_text(obj) -> str:
    """``obj`` as :func:`write_json` writes it (what is not JSON becomes its ``str``)."""
    return json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n"


def write_json(path: Path, obj) -> None:
    write_bytes(path, json_text(obj).encode())


def write_parquet(path: Path, table: pa.Table) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(path)
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, path)
