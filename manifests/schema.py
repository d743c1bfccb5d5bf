"""The in-flight sample schema: the columns every stage may read and the ledger keeps.

Samples travel between stages as Arrow tables (Ray Data blocks). A row is one *input*: it is
never deleted, only marked. A filter sets ``status``/``stage``/``reason`` and releases the row's
``image`` bytes, so ``inputs in == ledger rows out`` holds by construction. Later stages skip
rows whose status is not ``kept``.

Model stages (CLIP, aesthetic, captions) add their own score columns; the ledger keeps every
column except the heavy ones listed in :data:`HEAVY_COLUMNS`.
"""

from __future__ import annotations

import hashlib

import pyarrow as pa

SCHEMA_VERSION = 1

KEPT = "kept"
DROPPED = "dropped"
ERROR = "error"
STATUSES = (KEPT, DROPPED, ERROR)

#: Columns every batch carries from the moment a source emits it.
BASE_FIELDS: list[pa.Field] = [
    pa.field("id", pa.string(), nullable=False),  # stable hash of (source, source_key)
    pa.field("source", pa.string(), nullable=False),  # e.g. "folder:/data/pool"
    pa.field("source_key", pa.string(), nullable=False),  # path, tar member or URL
    pa.field("partition", pa.int32(), nullable=False),  # input partition (resume unit)
    pa.field("row", pa.int32(), nullable=False),  # position inside the partition (fixes order)
    pa.field("status", pa.string(), nullable=False),
    pa.field("stage", pa.string()),  # stage that dropped the row
    pa.field("reason", pa.string()),  # why, e.g. "aspect_ratio", "http_404"
    pa.field("image", pa.binary()),  # encoded bytes, released (null) when not kept
    pa.field("ext", pa.string()),  # shard member extension: jpg | png | webp
    pa.field("width", pa.int32()),  # known from metadata or the decoded header
    pa.field("height", pa.int32()),
    pa.field("text", pa.string()),  # alt-text / original caption
    pa.field("meta", pa.string()),  # JSON of extra source columns, carried through
    pa.field("url", pa.string()),  # URL sources only
    pa.field("bytes", pa.int64()),  # size of the original encoded input
    pa.field("thumb", pa.binary()),  # small JPEG of a few dropped rows, for the report
]
BASE_SCHEMA = pa.schema(BASE_FIELDS)

#: The CLIP image embedding column (a unit float32 vector per row), computed once and read by
#: every later stage. Stored beside the ledger (``embeddings/part-*.npy``, referenced by the
#: ledger's ``embedding_row``), never in it.
EMBEDDING = "clip_embedding"

#: In-flight only: never written to the ledger.
HEAVY_COLUMNS = ("image", EMBEDDING)

#: Set when the final shards are written.
LEDGER_WRITE_FIELDS: list[pa.Field] = [
    pa.field("shard", pa.string()),
    pa.field("key", pa.string()),
]


def stable_id(source: str, source_key: str) -> str:
    """A reproducible 16-hex-digit id: reruns and other machines agree on it."""
    return hashlib.sha1(f"{source}\x00{source_key}".encode()).hexdigest()[:16]


def printable_key(key: str) -> str:
    """``key`` as valid UTF-8. A file or tar member name that is not UTF-8 reaches Python with
    its bad bytes as lone surrogates (``surrogateescape``), which neither Arrow nor JSON can
    store; they become ``\\xNN`` escapes, so the row keeps a readable, stable name."""
    try:
        key.encode("utf-8")
        return key
    except UnicodeEncodeError:
        raw = key.encode("utf-8", "surrogateescape") if _escaped_only(key) else None
        if raw is not None:
            return raw.decode("utf-8", "backslashreplace")
        return key.encode("utf-8", "backslashreplace").decode("ascii")


def _escaped_only(key: str) -> bool:
    """Every surrogate in ``key`` is one ``surrogateescape`` made (U+DC80..U+DCFF)."""
    return all(not 0xD800 <= ord(c) <= 0xDFFF or 0xDC80 <= ord(c) <= 0xDCFF for c in key)


def empty_table() -> pa.Table:
    return BASE_SCHEMA.empty_table()


def new_rows(
    source: str,
    partition: int,
    keys: list[str],
    id_keys: list[str] | None = None,
    **columns: list,
) -> pa.Table:
    """Build a batch of fresh rows from a source; unspecified base columns are null.

    ``keys`` become ``source_key``. ``id_keys`` (default: ``keys``) are what the id hashes,
    for sources whose keys may repeat (the same URL twice in a parquet: there the id hashes
    the row's file and position). ``columns`` may hold any base column (``image``, ``text``,
    ``width``...). Status starts as ``kept``: a row is kept until some stage says otherwise.
    """
    n = len(keys)
    keys = [printable_key(k) for k in keys]
    id_keys = keys if id_keys is None else [printable_key(k) for k in id_keys]
    data: dict[str, list] = {
        "id": [stable_id(source, k) for k in id_keys],
        "source": [source] * n,
        "source_key": list(keys),
        "partition": [partition] * n,
        "row": list(range(n)),
        "status": [KEPT] * n,
    }
    for name, values in columns.items():
        if name not in BASE_SCHEMA.names:
            raise KeyError(f"unknown base column {name!r}; extra source columns go into 'meta'")
        if len(values) != n:
            raise ValueError(f"column {name!r} has {len(values)} values for {n} rows")
        data[name] = list(values)
    arrays = [
        pa.array(data[f.name], type=f.type) if f.name in data else pa.nulls(n, f.type)
        for f in BASE_FIELDS
    ]
    return pa.Table.from_arrays(arrays, schema=BASE_SCHEMA)
