"""Review files (CSV, TSV, Parquet, JSON Lines; .gz; file, directory or glob; local or fsspec URL)
→ validated snapshot Parquet + quarantine Parquet.

Every data row ends up in exactly one place: the snapshot, the quarantine (with a reason and its
original content) or the duplicate count, so ``rows_read == rows_ok + rows_quarantined +
rows_duplicates``. Files are read in batches (`sources.py`) and written batch by batch, so
memory does not grow with the input; only the set of review ids seen (for de-duplication) does.

Field counts: polars pads a short CSV row with empty strings, so in its output a short row looks
like one with empty trailing fields. `sources.py` therefore also splits each chunk into records
with vectorized string expressions (lines joined while a quote is open) and counts the separators
outside quotes. When that record count disagrees with the parser's row count (malformed quoting),
only rows with too many fields are detected, and a warning says so.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from tasks.config import IngestConfig
from tasks.files import file_sha256
from tasks.ingest.sources import (
    CHUNK_BYTES,
    EXTRA,
    Batch,
    list_files,
    open_batches,
    read_ahead,
)
from tasks.records import HTML_TAG, InputError, Snapshot

log = logging.getLogger(__name__)

SNAPSHOT_SCHEMA = pl.Schema(
    {"review_id": pl.String, "text": pl.String, "rating": pl.Int8, "language": pl.String}
)
QUARANTINE_SCHEMA = pl.Schema(
    {"file": pl.String, "row": pl.Int64, "reason": pl.String, "raw": pl.String}
)
SNAPSHOT_ROW_GROUP = 50_000  # also the tokenize shard: bounds its memory (~250 MB)


@dataclass(frozen=True)
class Preset:
    """A known dump layout, recognised by its header."""

    name: str
    text_columns: tuple[str, ...]
    rating_column: str


# Only here: the layouts picked by header when the configured (default) columns are not there.
PRESETS = (
    Preset("amazon-customer-reviews", ("review_headline", "review_body"), "star_rating"),
    Preset("amazon-multilingual", ("review_title", "review_body"), "stars"),
)
_DEFAULTS = IngestConfig()


@dataclass(frozen=True)
class Columns:
    text: tuple[str, ...]
    rating: str | None
    id: str | None
    language: str | None


def resolve_columns(file: str, found: list[str], cfg: IngestConfig) -> Columns:
    """The configured columns, else (when the config keeps the defaults) a preset matching the
    header; else refuse, naming the columns found and expected. A rating column left at its
    default is optional (the model does not use ratings): without it, no ratings."""
    candidates = [(tuple(cfg.text_columns), cfg.rating_column)]
    defaults = cfg.text_columns == _DEFAULTS.text_columns
    if defaults:
        keep_rating = cfg.rating_column_named  # e.g. "none" was asked for
        candidates += [
            (p.text_columns, cfg.rating_column if keep_rating else p.rating_column) for p in PRESETS
        ]
    if not cfg.rating_column_named:
        candidates += [(text, None) for text, _ in candidates]
    for text, rating in candidates:
        if all(c in found for c in text) and (rating is None or rating in found):
            repeated = [
                c for c in (*text, rating) if c and any(n.startswith(f"{c}~") for n in found)
            ]
            if repeated:
                raise InputError(
                    f"{file}: column {repeated[0]!r} appears more than once in the header; "
                    "rename or drop the extra one"
                )
            return Columns(
                text=text,
                rating=rating,
                id=cfg.id_column if cfg.id_column in found else None,
                language="language" if "language" in found else None,
            )
    expected = [*cfg.text_columns]
    if cfg.rating_column and cfg.rating_column_named:
        expected.append(cfg.rating_column)
    also = (
        " (or a known layout: "
        + "; ".join(f"{p.name}: {[*p.text_columns, p.rating_column]}" for p in PRESETS)
        + ")"
        if defaults
        else ""
    )
    shown = [c for c in found if not c.startswith("_unnamed_")]
    raise InputError(
        f"{file}: header lacks the needed column(s); found {shown}, expected {expected}{also}; "
        "name the right ones with --text-column / --rating-column"
    )


def _say_if_no_ratings(file: str, columns: list[str], cfg: IngestConfig) -> None:
    if cfg.rating_column and resolve_columns(file, columns, cfg).rating is None:
        log.info(
            "%s: no rating column (%r, the default, or a known layout's): read without ratings",
            file,
            cfg.rating_column,
        )


def _nonblank(column: str) -> pl.Expr:
    return pl.when(pl.col(column).str.strip_chars() != "").then(pl.col(column))


def _reason(
    names: list[str], cols: Columns, cfg: IngestConfig, replaced: bool, json_flag: bool
) -> pl.Expr:
    """The first failed check's name, or null for a good row."""
    text = pl.col("text")
    if cols.rating:
        rating = pl.col(cols.rating).str.strip_chars().cast(pl.Float64, strict=False)
        bad_rating = ~(
            rating.is_finite()
            & (rating == rating.round())
            & rating.is_between(cfg.rating_min, cfg.rating_max)
        ).fill_null(False)
    else:
        bad_rating = pl.lit(False)
    checks = [
        ("bad_json", pl.col("bad_json") if json_flag else pl.lit(False)),
        ("ragged", pl.col("fields") != len(names)),
        (
            "nul_byte",
            pl.any_horizontal(pl.col(c).str.contains("\x00", literal=True) for c in names),
        ),
        (
            "bad_encoding",
            pl.any_horizontal(pl.col(c).str.contains("\ufffd", literal=True) for c in names)
            if replaced
            else pl.lit(False),
        ),
        ("empty_text", text.fill_null("").str.replace_all(HTML_TAG, " ").str.strip_chars() == ""),
        ("too_long", text.str.len_chars() > cfg.max_text_chars),
        ("bad_rating", bad_rating),
    ]
    reason = pl.lit(None, pl.String)
    for label, failed in reversed(checks):
        reason = pl.when(failed.fill_null(False)).then(pl.lit(label)).otherwise(reason)
    return reason


def _text_digest(texts: pl.Series) -> pl.Series:
    """sha1 (hex, first 16) of each text: the review id when the file has none (once per row)."""
    return pl.Series([hashlib.sha1(t.encode()).hexdigest()[:16] for t in texts.to_list()])


class _Seen:
    """The review ids written so far. A batch is checked against sorted 64-bit hashes of them
    (binary search, not a join that re-hashed every id seen per batch, which dominated large
    ingests: README, Benchmarks); the ids whose hash is there are confirmed on the ids
    themselves, so a collision drops no review. Keeping the hashes sorted still copies them once
    per batch, and a batch with repeated ids scans the ids seen: linear per batch, with a small
    constant."""

    def __init__(self) -> None:
        self.hashes = np.empty(0, dtype=np.uint64)
        self.ids = pl.DataFrame(schema={"review_id": pl.String, "hash": pl.UInt64})

    def fresh(self, good: pl.DataFrame) -> pl.DataFrame:
        """`good` without repeated ids: the first of a batch, none already seen; records them."""
        unique = good.unique("review_id", keep="first", maintain_order=True)
        hashes = unique["review_id"].hash(seed=0).to_numpy()
        at = np.searchsorted(self.hashes, hashes).clip(max=max(len(self.hashes) - 1, 0))
        maybe = self.hashes[at] == hashes if len(self.hashes) else np.zeros(len(hashes), bool)
        if maybe.any():
            known = self.ids.filter(pl.col("hash").is_in(pl.Series(hashes[maybe]).implode()))
            repeated = pl.col("review_id").is_in(known["review_id"].implode())
            keep = pl.Series(~maybe) | ~unique.select(repeated).to_series()
            unique, hashes = unique.filter(keep), hashes[keep.to_numpy()]
        new = np.sort(hashes)
        self.hashes = np.insert(self.hashes, np.searchsorted(self.hashes, new), new)
        self.ids = pl.concat(
            [self.ids, unique.select("review_id", pl.Series("hash", hashes))], rechunk=False
        )
        return unique


class _ParquetOut:
    """A Parquet file written batch by batch to a temp file, renamed into place at the end."""

    def __init__(self, directory: Path, schema: pl.Schema) -> None:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".ingest-", suffix=".parquet.tmp")
        os.close(fd)
        self.tmp = Path(tmp)
        self.schema = schema
        self.writer = pq.ParquetWriter(
            self.tmp, pl.DataFrame(schema=schema).to_arrow().schema, compression="zstd"
        )
        self.rows = 0

    def write(self, frame: pl.DataFrame) -> None:
        if frame.height:
            table = frame.select(self.schema.names()).cast(self.schema).to_arrow()
            self.writer.write_table(table, row_group_size=SNAPSHOT_ROW_GROUP)
            self.rows += frame.height

    def finish(self, path: Path) -> None:
        self.writer.close()
        os.replace(self.tmp, path)

    def discard(self) -> None:
        self.writer.close()
        self.tmp.unlink(missing_ok=True)


def _validate(
    file: str, columns: list[str], batch: Batch, cfg: IngestConfig
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """One batch → (good rows in the snapshot schema, quarantined rows, each with its whole
    record as read when the batch says where it is, else its fields as JSON)."""
    frame, replaced = batch.frame, batch.replaced
    cols = resolve_columns(file, columns, cfg)
    review_text = pl.concat_str(
        [_nonblank(c) for c in cols.text], separator="\n", ignore_nulls=True
    )
    rows = frame.with_columns(review_text.alias("text"))
    rows = rows.with_columns(
        _reason(columns, cols, cfg, replaced, "bad_json" in frame.columns).alias("reason")
    )
    raw_fields = [pl.col(c) for c in columns] + (
        [pl.col(EXTRA).replace("", None)] if EXTRA in frame.columns else []
    )
    raw: pl.Expr | pl.Series = (
        pl.col("_raw") if "_raw" in frame.columns else pl.struct(raw_fields).struct.json_encode()
    )
    quarantine = rows.filter(pl.col("reason").is_not_null())
    if batch.data is not None and "_start" in frame.columns:
        data = batch.data  # a few rows: sliced in Python, the chunk is never copied per row
        records = [
            data[start : start + length].removesuffix(b"\r").decode(errors="replace")
            for start, length in quarantine.select("_start", "_len").iter_rows()
        ]
        raw = pl.Series(records, dtype=pl.String)
    quarantine = quarantine.select(pl.lit(file).alias("file"), "row", "reason", raw.alias("raw"))
    null = pl.lit(None, pl.String)
    good = rows.filter(pl.col("reason").is_null()).select(
        (_nonblank(cols.id).str.strip_chars() if cols.id else null).alias("review_id"),
        "text",
        (
            pl.col(cols.rating).str.strip_chars().cast(pl.Float64).cast(pl.Int8)
            if cols.rating
            else pl.lit(None, pl.Int8)
        ).alias("rating"),
        (_nonblank(cols.language) if cols.language else null).alias("language"),
    )
    if good["review_id"].null_count():
        good = good.with_columns(pl.col("review_id").fill_null(_text_digest(good["text"])))
    return good.cast(SNAPSHOT_SCHEMA), quarantine.cast(QUARANTINE_SCHEMA)


def ingest(
    source: str, cfg: IngestConfig, out_dir: Path, chunk_bytes: int = CHUNK_BYTES
) -> Snapshot:
    """Read, validate and deduplicate `source`; write snapshot and quarantine Parquet to `out_dir`.

    Raises:
        InputError: missing file, empty file or directory, unreadable format, header without the
            configured columns, or no usable row. Undecodable bytes only quarantine their rows
            (`bad_encoding`).
    """
    files = list_files(source)
    out_dir.mkdir(parents=True, exist_ok=True)
    snapshot_out = _ParquetOut(out_dir, SNAPSHOT_SCHEMA)
    quarantine_out = _ParquetOut(out_dir, QUARANTINE_SCHEMA)
    content = hashlib.sha256()
    seen = _Seen()
    read = duplicates = 0
    reasons: dict[str, int] = {}
    quoting: dict[str, str] = {}
    try:
        for file in files:
            batches = open_batches(file, cfg.format, chunk_bytes, cfg.quoting)
            for i, (columns, batch) in enumerate(read_ahead(batches)):
                if i == 0:
                    _say_if_no_ratings(file, columns, cfg)
                if batch.quoting:
                    quoting[file] = batch.quoting
                good, quarantine = _validate(file, columns, batch, cfg)
                read += batch.frame.height
                fresh = seen.fresh(good)
                duplicates += good.height - fresh.height
                for reason, count in quarantine["reason"].value_counts().iter_rows():
                    reasons[reason] = reasons.get(reason, 0) + count
                snapshot_out.write(fresh)
                quarantine_out.write(quarantine)
                rows_json = io.BytesIO()
                fresh.write_ndjson(rows_json)
                content.update(rows_json.getbuffer())
                del good, fresh, quarantine, batch
        if snapshot_out.rows == 0:
            raise InputError(
                f"{source}: no usable review in {read} row(s) "
                f"(quarantined: {dict(sorted(reasons.items()))}); check the file and the columns"
            )
        digest = content.hexdigest()[:16]
        snapshot_path = out_dir / f"snapshot-{digest}.parquet"
        quarantine_path = out_dir / f"quarantine-{digest}.parquet"
        quarantine_out.finish(quarantine_path)
        snapshot_out.finish(snapshot_path)
    except BaseException:
        snapshot_out.discard()
        quarantine_out.discard()
        raise
    result = Snapshot(
        path=snapshot_path,
        quarantine_path=quarantine_path,
        digest=digest,
        rows_read=read,
        rows_ok=snapshot_out.rows,
        rows_quarantined=quarantine_out.rows,
        rows_duplicates=duplicates,
        quarantine_reasons=dict(sorted(reasons.items())),
        quoting=quoting,
        sha256={path.name: file_sha256(path) for path in (snapshot_path, quarantine_path)},
    )
    assert read == result.rows_ok + result.rows_quarantined + result.rows_duplicates
    log.info(
        "ingested %s (%d file(s)): read %d, ok %d, quarantined %d %s, duplicates %d → %s",
        source,
        len(files),
        result.rows_read,
        result.rows_ok,
        result.rows_quarantined,
        result.quarantine_reasons,
        result.rows_duplicates,
        snapshot_path.name,
    )
    return result


def snapshot_damage(snapshot: Snapshot) -> str | None:
    """What is wrong with a snapshot's files (deleted, truncated, overwritten), None if nothing."""
    for path in (snapshot.path, snapshot.quarantine_path):
        if not path.exists():
            return f"{path.name} was deleted"
        recorded = snapshot.sha256.get(path.name)
        if recorded is None:
            return f"{path.name} has no recorded digest (cached by an older version)"
        if file_sha256(path) != recorded:
            return f"{path.name} does not match its recorded digest (truncated or overwritten)"
    return None
