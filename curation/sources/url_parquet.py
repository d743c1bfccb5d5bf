"""A COYO-700M / LAION-style Parquet of ``url``, ``text``, ``width``, ``height`` (column names
configurable). Any other column is carried through into ``meta``. Images are fetched later by
the download stage, after the aspect filter has had a look at the declared width and height."""

from __future__ import annotations

import glob
import json
import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from curation.config import InputConfig
from engine.partitions import Partition
from manifests.schema import new_rows


def source_name(cfg: InputConfig) -> str:
    return f"url_parquet:{Path(cfg.path).resolve()}"


def _parquet_files(path: str) -> list[str]:
    p = Path(path)
    if p.is_dir():
        return sorted(str(f) for f in p.rglob("*.parquet"))
    if p.is_file():
        return [str(p)]
    return sorted(glob.glob(path))


def list_parquet_partitions(cfg: InputConfig) -> list[Partition]:
    files = _parquet_files(cfg.path)
    if not files:
        raise FileNotFoundError(f"input.path {cfg.path}: no .parquet files found")
    parts: list[Partition] = []
    for f in files:
        meta = pq.ParquetFile(f)
        names = meta.schema_arrow.names
        if cfg.url_column not in names:
            raise ValueError(
                f"{f} has no column {cfg.url_column!r} (columns: {names}); "
                "set input.url_column to the column holding the URLs"
            )
        for rg in range(meta.num_row_groups):
            n = meta.metadata.row_group(rg).num_rows
            for offset in range(0, n, cfg.partition_size):
                length = min(cfg.partition_size, n - offset)
                spec = {"file": f, "row_group": rg, "offset": offset, "length": length}
                parts.append(Partition(index=len(parts), kind="url_parquet", spec=spec))
    return parts


def _number(value) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    if math.isnan(f) or f <= 0 or f > 2**31 - 1:
        return None
    return int(f)


def load_parquet_partition(part: Partition, cfg: InputConfig) -> pa.Table:
    spec = part.spec
    pf = pq.ParquetFile(spec["file"])
    table = pf.read_row_group(spec["row_group"]).slice(spec["offset"], spec["length"])
    rows = table.to_pylist()
    special = {cfg.url_column, cfg.text_column, cfg.width_column, cfg.height_column}
    fname = Path(spec["file"]).name
    urls, id_keys, texts, widths, heights, metas = [], [], [], [], [], []
    for i, row in enumerate(rows):
        url = row.get(cfg.url_column)
        urls.append("" if url is None else str(url))
        id_keys.append(f"{fname}#{spec['row_group']}:{spec['offset'] + i}")
        text = row.get(cfg.text_column)
        texts.append(None if text is None else str(text))
        widths.append(_number(row.get(cfg.width_column)))
        heights.append(_number(row.get(cfg.height_column)))
        extra = {k: v for k, v in row.items() if k not in special}
        metas.append(json.dumps(extra, sort_keys=True, default=str) if extra else None)
    return new_rows(
        source_name(cfg),
        part.index,
        urls,
        id_keys=id_keys,
        url=urls,
        text=texts,
        width=widths,
        height=heights,
        meta=metas,
    )
