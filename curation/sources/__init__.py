"""Image sources. Each lists its partitions (the unit of work and of resume) up front, and
loads one partition into base-schema rows (``manifests.schema``).

A source never raises for a bad input: it emits a row with status ``error`` and a reason, so the
ledger accounts for it.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

import pyarrow as pa

from curation.config import InputConfig
from engine.partitions import Partition, count_files


def list_partitions(cfg: InputConfig) -> list[Partition]:
    """The partitions of the input, in a deterministic order: all of them, or the first
    ``input.max_partitions``."""
    if cfg.kind == "folder":
        from curation.sources.folder import list_folder_partitions as lister
    elif cfg.kind == "webdataset":
        from curation.sources.tars import list_tar_partitions as lister
    else:
        from curation.sources.url_parquet import list_parquet_partitions as lister
    return lister(cfg)[: cfg.max_partitions]


def load_partition(part: Partition, cfg: InputConfig) -> pa.Table:
    """The rows of one partition, images read (or, for URLs, still to download)."""
    if part.kind == "folder":
        from curation.sources.folder import load_folder_partition

        return load_folder_partition(part, cfg)
    if part.kind == "webdataset":
        from curation.sources.tars import load_tar_partition

        return load_tar_partition(part, cfg)
    from curation.sources.url_parquet import load_parquet_partition

    return load_parquet_partition(part, cfg)


def count_inputs(cfg: InputConfig) -> int | None:
    """The pool's inputs, counted without reading any image (a build's plan); None when the
    pool is not there yet."""
    path = Path(cfg.path)
    if not path.exists():
        return None
    cap = cfg.max_partitions
    most = None if cap is None else cap * cfg.partition_size
    if cfg.kind == "folder":
        n = count_files(path, cfg.extensions)
        return n if most is None else min(n, most)
    files = sorted(path.rglob("*")) if path.is_dir() else [path]
    if cfg.kind == "url_parquet":
        import pyarrow.parquet as pq

        n = sum(pq.ParquetFile(f).metadata.num_rows for f in files if f.suffix == ".parquet")
        return n if most is None else min(n, most)  # at most: partitions end at file ends
    from curation.sources.tars import TAR_SUFFIXES

    keys = 0
    tars = [f for f in files if f.is_file() and f.name.endswith(TAR_SUFFIXES)]
    for f in tars[:cap]:  # a partition is a tar
        found: set[str] = set()
        try:
            with tarfile.open(f, mode="r|*") as tar:
                for m in tar:
                    if not m.isdir():
                        found.add(m.name.split(".", 1)[0])
        except (tarfile.TarError, OSError, EOFError):
            found.add("\0broken")  # a damaged tar still costs its curation job one row
        keys += len(found)
    return keys
