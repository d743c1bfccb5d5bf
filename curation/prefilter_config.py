"""Config of the pre-download filters of a URL parquet pool (``prefilter:`` in a curate YAML).

COYO-700M and LAION ship per-row scores (``aesthetic_score_laion_v2``, ``watermark_score``,
``nsfw_score_opennsfw2``, ``clip_similarity_vitl14``, ``image_phash``, ...) and repeat about 12%
of their URLs. Filtering and deduplicating on those columns before anything is fetched is the
cheapest cut there is; ``curation.prefilter`` does it pool-wide, these dataclasses say how.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from manifests.configs import ConfigError, require

#: comparison -> the comparison a failing value satisfies (the ledger reason's operator)
OPS = {">=": "<", ">": "<=", "<=": ">", "<": ">=", "==": "!=", "!=": "=="}
MISSING = ("keep", "drop")


@dataclass
class ColumnRule:
    """Keep rows whose ``column`` satisfies ``column op value``; the others are dropped before
    download with the reason ``{column}{negated op}{value}`` (e.g. ``watermark_score>0.5``)."""

    column: str = ""
    op: str = ">="
    value: float = 0.0
    # a null or NaN score: keep the row (nothing to judge it by) or drop it ({column}:missing)
    missing: str = "keep"

    def __post_init__(self) -> None:
        require(bool(self.column), "column", "is empty", "name a column of the parquet")
        require(self.op in OPS, "op", f"{self.op!r} is not one of {list(OPS)}")
        require(self.missing in MISSING, "missing", f"{self.missing!r} is not keep or drop")

    def reason(self) -> str:
        return f"{self.column}{OPS[self.op]}{self.value:g}"


@dataclass
class PrefilterConfig:
    """Pre-download filtering and deduplication of a ``url_parquet`` pool, pool-wide.

    Rows are judged in pool order (the partition plan's order): first every rule, then exact URL
    deduplication among the rows that passed, then exact deduplication on ``phash_column``
    among those. Of each group of duplicates the first in pool order is kept; the others get
    ``duplicate_of`` = its ledger id. Nothing dropped here is ever requested.
    """

    rules: list[ColumnRule] = field(default_factory=list)
    dedup_url: bool = False  # exact URL deduplication across the whole pool
    phash_column: str | None = None  # e.g. image_phash: identical hashes are duplicates
    # rows per spill bucket: memory is bounded by this, whatever the pool's size
    bucket_rows: int = 2_000_000
    batch_rows: int = 262_144  # rows read from the parquet at a time

    def __post_init__(self) -> None:
        for i, rule in enumerate(self.rules):
            if isinstance(rule, dict):  # built in Python rather than from YAML
                try:
                    self.rules[i] = ColumnRule(**rule)
                except ConfigError as exc:
                    raise ConfigError(f"rules[{i}].{exc.field}", _problem(exc)) from None
        require(self.bucket_rows >= 1, "bucket_rows", "must be at least 1", "e.g. 2000000")
        require(self.batch_rows >= 1, "batch_rows", "must be at least 1", "e.g. 262144")
        require(
            self.phash_column is None or bool(self.phash_column),
            "phash_column",
            "is empty",
            "null to leave it off",
        )

    @property
    def enabled(self) -> bool:
        return bool(self.rules or self.dedup_url or self.phash_column)

    def columns(self) -> list[str]:
        """The parquet columns the rules and the phash deduplication read."""
        cols = [r.column for r in self.rules]
        if self.phash_column:
            cols.append(self.phash_column)
        return list(dict.fromkeys(cols))

    def check_pool(self, path: str) -> None:
        """:meth:`check_schema` on every parquet of the pool (footers only). The files are
        found as ``curation.sources.url_parquet`` finds them (a file, a folder, a glob)."""
        import glob
        from pathlib import Path

        import pyarrow.parquet as pq

        p = Path(path)
        files = sorted(
            str(f) for f in (p.rglob("*.parquet") if p.is_dir() else [p] if p.is_file() else [])
        ) or sorted(glob.glob(path))
        for f in files:
            self.check_schema(pq.read_schema(f), f)

    def check_schema(self, schema, path: str) -> None:
        """Every declared column is in the parquet, and every rule's column is numeric:
        a ConfigError naming the field otherwise (before any work starts)."""
        import pyarrow as pa

        names = schema.names
        for i, rule in enumerate(self.rules):
            where = f"prefilter.rules[{i}].column"
            require(
                rule.column in names,
                where,
                f"{path} has no column {rule.column!r}",
                f"one of {names}",
            )
            typ = schema.field(rule.column).type
            require(
                pa.types.is_integer(typ) or pa.types.is_floating(typ) or pa.types.is_decimal(typ),
                where,
                f"column {rule.column!r} is {typ}, not a number",
            )
        if self.phash_column:
            require(
                self.phash_column in names,
                "prefilter.phash_column",
                f"{path} has no column {self.phash_column!r}",
                f"one of {names}",
            )


def _problem(exc: ConfigError) -> str:
    return str(exc).split(": ", 1)[1]
