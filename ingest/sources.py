"""The annotation file cut into partitions, and a partition read back as in-flight rows.

- **JSONL**: the plan scans the file once for byte offsets (no parsing) and the exact-duplicate
  digests of its lines; a partition is ``take`` records from a byte offset, read by the worker.
  Blank lines are no records (as every JSONL reader skips them); a line that is not UTF-8 is a
  ``not_utf8`` row, one that is not JSON a ``bad_json`` row.
- **JSON** (a list of records, as LLaVA ships ``llava_v1_5_mix665k.json``): parsed once by the
  plan and written as JSONL into the work dir, then cut as above; its keys are ``file#index``. A
  file that does not parse is one ``bad_json_file`` (or ``not_utf8``) row.
- **Parquet / Arrow** (the hub's tables, ``.parquet`` files or the ``.arrow`` files of
  ``datasets.save_to_disk``): slices of rows by offset, counted from the files' metadata and
  read with pyarrow. Exact duplicates need one global look at rows that hold image bytes, so the
  workers hash them and the driver sees only the digests (``ingest.table_dups``).

Ids are ``stable_id(source, source_key)``: the same record gets the same key on every run.
"""

from __future__ import annotations

import hashlib
import json
from array import array
from pathlib import Path

import numpy as np
import pyarrow as pa

from engine.partitions import Partition
from ingest.config import ImportConfig
from manifests.atomic import write_bytes
from manifests.schema import ERROR, KEPT, stable_id

TABLE_EXTS = (".parquet", ".arrow")
#: rows per batch when a table is read
DIGEST_BATCH = 256


def source_name(cfg: ImportConfig) -> str:
    return f"import:{cfg.input.format}:{Path(cfg.input.annotations).name}"


def _digest(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()[:16]


def _id64(data: bytes) -> int:
    """A record's 64-bit digest: the plan keeps one int per distinct record (an int -> int
    entry, about 100 bytes: 1.2M records of ShareGPT4V hold ~120 MB on the driver)."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def _line_partitions(path: Path, name: str, numbering: str, size: int, dedupe: bool) -> list[dict]:
    """Specs of ``size`` non-blank lines each, with the duplicates each holds.

    Lines hold paths, not media, so the plan hashes them itself, into flat arrays (16 bytes a
    line, not a dict entry of ~100): duplicates are found once the scan is done."""
    specs: list[dict] = []
    digests, line_nos = array("Q"), array("q")  # per record, in order
    offset, line_no, ordinal = 0, 0, 0
    with open(path, "rb") as f:
        for line in f:
            line_no += 1
            start, offset = offset, offset + len(line)
            body = line.strip().removeprefix(b"\xef\xbb\xbf")
            if not body:
                continue
            if ordinal % size == 0:
                specs.append(
                    {
                        "file": str(path),
                        "name": name,
                        "numbering": numbering,
                        "offset": start,
                        "first": line_no if numbering == "line" else ordinal,
                        "take": 0,
                        "dups": {},
                    }
                )
            if dedupe:
                digests.append(_id64(body))
                line_nos.append(line_no)
            specs[-1]["take"] += 1
            ordinal += 1
    if dedupe and len(digests):
        flat = np.frombuffer(digests, dtype=np.uint64)
        _, first, inverse = np.unique(flat, return_index=True, return_inverse=True)
        kept_at = first[inverse]
        for o in np.flatnonzero(kept_at != np.arange(len(flat))).tolist():
            k = int(kept_at[o])
            specs[o // size]["dups"][str(o % size)] = _key(name, numbering, line_nos[k], k)
    return specs


def _key(name: str, numbering: str, line_no: int, ordinal: int) -> str:
    return f"{name}:{line_no}" if numbering == "line" else f"{name}#{ordinal}"


def _json_to_lines(path: Path, work: Path) -> tuple[Path | None, str | None]:
    """A JSON list of records as JSONL in the work dir; or the reason the file is refused."""
    try:
        data = json.loads(path.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError:
        return None, "not_utf8"
    except (json.JSONDecodeError, RecursionError):
        return None, "bad_json_file"
    if isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), list):
        data = next(iter(data.values()))  # {"annotations": [...]}
    if not isinstance(data, list):
        return None, "not_a_list"
    target = work / "records" / f"{path.stem}.jsonl"
    lines = b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in data)
    write_bytes(target, lines)
    return target, None


def table_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.suffix in TABLE_EXTS and p.is_file())


def open_table(path: Path):
    """Record batches of a ``.parquet`` or ``.arrow`` file (IPC file or stream format)."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).iter_batches(batch_size=DIGEST_BATCH)
    try:
        reader = pa.ipc.open_file(pa.memory_map(str(path)))
    except pa.ArrowInvalid:  # datasets.save_to_disk writes the stream format
        return iter(pa.ipc.open_stream(pa.memory_map(str(path))))
    return (reader.get_batch(i) for i in range(reader.num_record_batches))


def _batches(path: Path):
    yield from open_table(path)


def read_slice(path: Path, offset: int, length: int) -> pa.Table:
    """Rows ``offset .. offset + length`` of a table file."""
    rows, seen = [], 0
    for batch in _batches(path):
        n = batch.num_rows
        if seen + n > offset and seen < offset + length:
            lo = max(0, offset - seen)
            rows.append(batch.slice(lo, min(n, offset + length - seen) - lo))
        seen += n
        if seen >= offset + length:
            break
    if not rows:
        return pa.table({})
    return pa.Table.from_batches(rows)


def row_digest(row: dict) -> int:
    """A table row's 64-bit digest (image cells included): computed in the workers
    (``ingest.table_dups``), never by the driver."""
    h = hashlib.blake2b(digest_size=8)
    for k in sorted(row):
        h.update(k.encode() + b"\x00")
        v = row[k]
        h.update(v if isinstance(v, bytes) else json.dumps(v, default=_bytes_digest).encode())
        h.update(b"\x01")
    return int.from_bytes(h.digest(), "big")


def _bytes_digest(v):
    return _digest(v) if isinstance(v, bytes) else str(v)


def table_rows(path: Path) -> int:
    """Rows of a table file, from its metadata (Parquet) or batch lengths (Arrow, memory-
    mapped): the plan never reads a row."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    return sum(b.num_rows for b in _batches(path))


def table_row_key(spec: dict, i: int) -> str:
    """The source key of row ``i`` of a table partition."""
    return f"{spec['name']}#{spec['offset'] + i}"


def table_dups_dir(cfg: ImportConfig) -> Path:
    """Where ``ingest.table_dups`` leaves each table partition's duplicates."""
    return Path(cfg.output) / "_work" / "dups"


def _table_partitions(cfg: ImportConfig) -> list[dict]:
    """Slices of ``partition_size`` rows of each table file. Exact duplicates are found later,
    in the workers (``ingest.table_dups``): a row holds its image bytes."""
    size, specs = cfg.input.partition_size, []
    for path in table_files(Path(cfg.input.annotations)):
        n = table_rows(path)
        for at in range(0, n, size):
            specs.append(
                {"file": str(path), "name": path.name, "offset": at, "length": min(size, n - at)}
            )
    return specs


def list_import_partitions(cfg: ImportConfig) -> list[Partition]:
    inp = cfg.input
    path = Path(inp.annotations)
    work = Path(cfg.output) / "_work"
    if inp.format == "parquet":
        kind, specs = "table", _table_partitions(cfg)
    elif path.suffix == ".json":
        lines, reason = _json_to_lines(path, work)
        if reason:
            kind, specs = "file_error", [{"name": path.name, "reason": reason, "take": 1}]
        else:
            kind = "lines"
            specs = _line_partitions(lines, path.name, "index", inp.partition_size, inp.dedupe)
    else:
        kind = "lines"
        specs = _line_partitions(path, path.name, "line", inp.partition_size, inp.dedupe)
    parts = [Partition(i, kind, spec) for i, spec in enumerate(specs)]
    return parts[: inp.max_partitions]


def count_records(cfg: ImportConfig) -> int | None:
    """Records a run would read, counted without parsing (None for a JSON list)."""
    path = Path(cfg.input.annotations)
    if not path.exists():
        return None
    if cfg.input.format == "parquet":
        n = 0
        for p in table_files(path):
            if p.suffix == ".parquet":
                import pyarrow.parquet as pq

                n += pq.ParquetFile(p).metadata.num_rows
            else:
                n += sum(b.num_rows for b in _batches(p))
    elif path.suffix == ".json":
        return None
    else:
        with open(path, "rb") as f:
            n = sum(1 for line in f if line.strip())
    if cfg.input.max_partitions is not None:
        n = min(n, cfg.input.max_partitions * cfg.input.partition_size)
    return n


# --- a partition's rows -----------------------------------------------------------------------

ROW_FIELDS = {
    "id": pa.string(),
    "source": pa.string(),
    "source_key": pa.string(),
    "partition": pa.int32(),
    "row": pa.int32(),
    "status": pa.string(),
    "stage": pa.string(),
    "reason": pa.string(),
    "duplicate_of": pa.string(),
    "_raw": pa.string(),  # the record's JSON text (a table row as JSON, its cells apart)
    "_cells": pa.list_(pa.binary()),  # a table row's image bytes
}


def _rows(source: str, part: Partition, items: list[dict]) -> pa.Table:
    cols: dict[str, list] = {k: [] for k in ROW_FIELDS}
    for i, it in enumerate(items):
        cols["id"].append(stable_id(source, it["key"]))
        cols["source"].append(source)
        cols["source_key"].append(it["key"])
        cols["partition"].append(part.index)
        cols["row"].append(i)
        cols["status"].append(ERROR if it.get("reason") else KEPT)
        cols["stage"].append("read" if it.get("reason") else None)
        cols["reason"].append(it.get("reason"))
        cols["duplicate_of"].append(it.get("dup"))
        cols["_raw"].append(it.get("raw"))
        cols["_cells"].append(it.get("cells"))
    return pa.table({k: pa.array(v, ROW_FIELDS[k]) for k, v in cols.items()})


def _load_lines(spec: dict) -> list[dict]:
    items: list[dict] = []
    line_no = spec["first"] - 1 if spec["numbering"] == "line" else None
    ordinal = spec["first"]
    with open(spec["file"], "rb") as f:
        f.seek(spec["offset"])
        while len(items) < spec["take"]:
            line = f.readline()
            if not line:
                break
            if line_no is not None:
                line_no += 1
            body = line.strip()
            if not body:
                continue
            key = _key(spec["name"], spec["numbering"], line_no or 0, ordinal)
            item: dict = {"key": key, "dup": spec["dups"].get(str(len(items)))}
            try:
                item["raw"] = body.decode("utf-8").removeprefix("\ufeff")  # a BOM on line 1
            except UnicodeDecodeError:
                item["reason"] = "not_utf8"
            items.append(item)
            ordinal += 1
    return items


def _cell_bytes(value) -> list[bytes] | None:
    """Image bytes of a table cell: raw bytes, the hub's ``{bytes, path}`` struct, or a list."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return [value]
    if isinstance(value, dict):
        data = value.get("bytes")
        if isinstance(data, bytes):
            return [data]
        if value.get("path"):  # an image named but not held: never a text row
            raise ValueError("an image cell with a path and no bytes")
        return None
    if isinstance(value, list):
        out = []
        for v in value:
            got = _cell_bytes(v)
            if not got:
                raise ValueError("an image cell without bytes")
            out += got
        return out or None
    raise ValueError(f"an image cell of type {type(value).__name__}")


def _load_table(part: Partition, cfg: ImportConfig) -> list[dict]:
    inp, spec = cfg.input, part.spec
    table = read_slice(Path(spec["file"]), spec["offset"], spec["length"])
    found = table_dups_dir(cfg) / f"p{part.index:06d}.json"
    dups = json.loads(found.read_text()) if found.is_file() else {}
    items = []
    for i, row in enumerate(table.to_pylist()):
        key = table_row_key(spec, i)
        item: dict = {"key": key, "dup": dups.get(str(i))}
        try:
            cells = _cell_bytes(row.pop(inp.image_column, None))
        except ValueError:
            item["reason"] = "bad_image_cell"
            items.append(item)
            continue
        rec = {k: v for k, v in row.items() if not isinstance(v, bytes)}
        if inp.conversation_column != "conversations" and inp.conversation_column in rec:
            rec["conversations"] = rec.pop(inp.conversation_column)
        if cells:
            rec["image"] = [f"cell:{j}" for j in range(len(cells))]
        item["raw"] = json.dumps(rec, ensure_ascii=False, default=str)
        item["cells"] = cells
        items.append(item)
    return items


def load_import_partition(part: Partition, cfg: ImportConfig) -> pa.Table:
    source = source_name(cfg)
    if part.kind == "file_error":
        items = [{"key": part.spec["name"], "reason": part.spec["reason"]}]
    elif part.kind == "table":
        items = _load_table(part, cfg)
    else:
        items = _load_lines(part.spec)
    return _rows(source, part, items)
