"""Review file (CSV/TSV, maybe gzipped, local or http) → validated snapshot Parquet + quarantine.

Every data row ends up in exactly one place: the snapshot, the quarantine (with a reason) or the
duplicate count, so ``rows_read == rows_ok + rows_quarantined + rows_duplicates``.

Field counts: polars pads a short row with empty strings, so in its output a short row looks like
one with empty trailing fields. The decoded text is therefore also split into records with
vectorized string expressions (lines joined while a quote is open) and the separators outside
quotes are counted. When that record count disagrees with the parser's row count (malformed
quoting), only rows with too many fields are detected, and a warning says so.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path
from urllib.parse import urlparse

import fsspec
import polars as pl
from prefect import task
from prefect.states import State

from tasks.config import IngestConfig
from tasks.records import InputError, Snapshot
from tasks.text import HTML_TAG

log = logging.getLogger(__name__)

SNAPSHOT_SCHEMA = pl.Schema(
    {"review_id": pl.String, "text": pl.String, "rating": pl.Int8, "language": pl.String}
)
QUARANTINE_SCHEMA = pl.Schema({"row": pl.Int64, "reason": pl.String, "raw": pl.String})
_EXTRA = "_extra"  # the first surplus field of a row with too many fields ("" when none)


def _read_text(source: str) -> tuple[str, bool]:
    """The file as text, and whether invalid UTF-8 was replaced by U+FFFD (rows quarantined)."""
    try:
        with fsspec.open(source, "rb", compression="infer") as fh:
            data: bytes = fh.read()
    except FileNotFoundError:
        raise InputError(f"{source}: no such file") from None
    try:
        return data.decode("utf-8-sig"), False
    except UnicodeDecodeError as err:
        log.warning(
            "%s: not UTF-8 (first bad byte at %d); those rows quarantined", source, err.start
        )
        return data.decode("utf-8-sig", errors="replace"), True


def _field_counts(text: str, separator: str, quoted: bool) -> pl.Series:
    """Fields per record, header first; 0 for a blank line. No CSV parser involved."""
    lines = pl.Series("line", text.split("\n"), dtype=pl.String)
    if lines.len() and lines[-1] == "":
        lines = lines.head(-1)
    frame = lines.str.strip_suffix("\r").to_frame()
    if quoted:
        # A record ends on a line after which an even number of quotes has been seen.
        ends = (pl.col("line").str.count_matches('"', literal=True).cum_sum() % 2) == 0
        frame = (
            frame.group_by(
                ends.shift(1, fill_value=True).cum_sum().alias("record"), maintain_order=True
            )
            .agg(pl.col("line").str.join("\n"))
            .with_columns(pl.col("line").str.replace_all('"[^"]*"', ""))
        )
    fields = pl.col("line").str.count_matches(separator, literal=True) + 1
    blank = pl.col("line").str.strip_chars() == ""
    return frame.select(pl.when(blank).then(0).otherwise(fields)).to_series()


def _parse(source: str, text: str, separator: str, quoted: bool) -> tuple[list[str], pl.DataFrame]:
    """Header and data rows as strings, with `row` (1-based) and `fields` (field count)."""
    quote = '"' if quoted else None
    data = text.encode()
    try:
        columns = pl.read_csv(
            data, separator=separator, quote_char=quote, n_rows=0, infer_schema=False
        ).columns
    except pl.exceptions.NoDataError:
        raise InputError(f"{source}: empty file; expected a header row and reviews") from None
    width = len(columns)
    try:
        rows = pl.read_csv(
            data,
            has_header=False,
            skip_rows=1,
            separator=separator,
            quote_char=quote,
            schema={f"c{i}": pl.String for i in range(width + 1)},
            missing_columns="insert",
            truncate_ragged_lines=True,
            empty_string_is_null=False,
        ).rename({f"c{i}": name for i, name in enumerate([*columns, _EXTRA])})
    except pl.exceptions.ComputeError as err:
        # An unclosed or stray quote leaves every later row ambiguous: refuse the file.
        first = str(err).strip().splitlines()[0]
        raise InputError(
            f"{source}: malformed CSV quoting ({first}); fix the stray '\"' or export as TSV"
        ) from None
    counts = _field_counts(text, separator, quoted)
    if counts.len() == rows.height + 1:
        fields: pl.Expr | pl.Series = counts.slice(1)
    else:
        log.warning("%s: irregular quoting; only rows with too many fields are detected", source)
        blank = pl.all_horizontal(pl.col(c) == "" for c in [*columns, _EXTRA])
        fields = pl.when(blank).then(0).otherwise(width + (pl.col(_EXTRA) != "").cast(pl.Int64))
    rows = rows.with_columns(pl.lit(fields).alias("fields")).with_row_index("row", offset=1)
    return columns, rows.filter(pl.col("fields") > 0)


def _require(source: str, found: list[str], cfg: IngestConfig) -> None:
    expected = [*cfg.text_columns, *([cfg.rating_column] if cfg.rating_column else [])]
    missing = [c for c in expected if c not in found]
    if missing:
        raise InputError(
            f"{source}: missing column(s) {missing}; found {found}, expected {expected}; "
            "name the right ones with --text-column / --rating-column"
        )


def _nonblank(column: str) -> pl.Expr:
    return pl.when(pl.col(column).str.strip_chars() != "").then(pl.col(column))


def _reason(columns: list[str], cfg: IngestConfig, text: pl.Expr, replaced: bool) -> pl.Expr:
    """The first failed check's name, or null for a good row."""
    fields = [*columns, _EXTRA]
    if cfg.rating_column:
        rating = pl.col(cfg.rating_column).str.strip_chars().cast(pl.Float64, strict=False)
        bad_rating = ~(
            rating.is_finite()
            & (rating == rating.round())
            & rating.is_between(cfg.rating_min, cfg.rating_max)
        ).fill_null(False)
    else:
        bad_rating = pl.lit(False)
    checks = [
        ("ragged", pl.col("fields") != len(columns)),
        (
            "nul_byte",
            pl.any_horizontal(pl.col(c).str.contains("\x00", literal=True) for c in fields),
        ),
        (
            "bad_encoding",
            pl.any_horizontal(pl.col(c).str.contains("\ufffd", literal=True) for c in fields)
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


def _content_digest(frame: pl.DataFrame) -> str:
    """sha256 (hex, first 16) of the rows themselves, not of Parquet encoding details."""
    return hashlib.sha256(frame.write_ndjson().encode()).hexdigest()[:16]


def _write_parquet(frame: pl.DataFrame, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        frame.write_parquet(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def ingest(source: str, cfg: IngestConfig, out_dir: Path) -> Snapshot:
    """Read, validate and deduplicate `source`; write snapshot and quarantine Parquet to `out_dir`.

    Raises:
        InputError: missing file, empty file, header without the configured columns, or no usable
            row. Undecodable bytes only quarantine their rows (`bad_encoding`).
    """
    path = urlparse(source).path if "://" in source else source
    separator = "\t" if path.endswith((".tsv", ".tsv.gz")) else ","
    # TSV review dumps are unquoted and full of stray '"', so quotes are plain text there.
    quoted = separator == ","
    text, replaced = _read_text(source)
    columns, rows = _parse(source, text, separator, quoted)
    if replaced and any("\ufffd" in c for c in columns):
        raise InputError(f"{source}: the header is not UTF-8; re-encode the file as UTF-8")
    _require(source, columns, cfg)

    review_text = pl.concat_str(
        [_nonblank(c) for c in cfg.text_columns], separator="\n", ignore_nulls=True
    )
    rows = rows.with_columns(
        _reason(columns, cfg, review_text, replaced).alias("reason"), review_text.alias("text")
    )
    quarantine = rows.filter(pl.col("reason").is_not_null()).select(
        pl.col("row").cast(pl.Int64),
        "reason",
        pl.struct(*columns, pl.col(_EXTRA).replace("", None)).struct.json_encode().alias("raw"),
    )
    null = pl.lit(None, pl.String)
    good = rows.filter(pl.col("reason").is_null()).select(
        (_nonblank(cfg.id_column).str.strip_chars() if cfg.id_column in columns else null).alias(
            "review_id"
        ),
        "text",
        (
            pl.col(cfg.rating_column).str.strip_chars().cast(pl.Float64).cast(pl.Int8)
            if cfg.rating_column
            else pl.lit(None, pl.Int8)
        ).alias("rating"),
        (_nonblank("language") if "language" in columns else null).alias("language"),
    )
    if good["review_id"].null_count():
        good = good.with_columns(pl.col("review_id").fill_null(_text_digest(good["text"])))
    snapshot = good.cast(SNAPSHOT_SCHEMA).unique("review_id", keep="first", maintain_order=True)

    reasons = dict(sorted(quarantine["reason"].value_counts().iter_rows()))
    if snapshot.height == 0:
        raise InputError(
            f"{source}: no usable review in {rows.height} row(s) (quarantined: {reasons}); "
            "check the file and the configured columns"
        )
    digest = _content_digest(snapshot)
    out_dir.mkdir(parents=True, exist_ok=True)
    snapshot_path = out_dir / f"snapshot-{digest}.parquet"
    quarantine_path = out_dir / f"quarantine-{digest}.parquet"
    _write_parquet(quarantine.cast(QUARANTINE_SCHEMA), quarantine_path)
    _write_parquet(snapshot, snapshot_path)
    result = Snapshot(
        path=snapshot_path,
        quarantine_path=quarantine_path,
        digest=digest,
        rows_read=rows.height,
        rows_ok=snapshot.height,
        rows_quarantined=quarantine.height,
        rows_duplicates=good.height - snapshot.height,
        quarantine_reasons=reasons,
    )
    log.info(
        "ingested %s: read %d, ok %d, quarantined %d %s, duplicates %d → %s",
        source,
        result.rows_read,
        result.rows_ok,
        result.rows_quarantined,
        reasons,
        result.rows_duplicates,
        snapshot_path.name,
    )
    return result


def _retry_unless_bad_input(task: object, task_run: object, state: State) -> bool:
    """Retry a flaky download, never bad input: the same file would fail the same way."""
    return not isinstance(state.data, InputError)


@task(
    name="ingest",
    retries=2,
    retry_delay_seconds=[2, 10],
    retry_condition_fn=_retry_unless_bad_input,
)
def ingest_task(source: str, cfg: IngestConfig, out_dir: Path) -> Snapshot:
    return ingest(source, cfg, out_dir)
