"""Where reviews come from: files, directories and globs, local or through fsspec, read in batches.

`open_batches` yields, for one file, batches of rows as polars frames of strings, never the whole
file: CSV/TSV and JSON Lines are read in byte chunks cut at record boundaries (for CSV, a newline
outside quotes), Parquet by record batches. Memory stays bounded by the chunk size, whatever the
file size.
"""

from __future__ import annotations

import csv
import gzip
import json
import logging
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from queue import Empty, Full, Queue
from typing import IO, Literal, TypeVar

import fsspec
import polars as pl
import pyarrow.parquet as pq
from fsspec.core import url_to_fs
from fsspec.utils import infer_compression

from tasks.records import InputError

log = logging.getLogger(__name__)
_T = TypeVar("_T")

Format = Literal["csv", "tsv", "parquet", "jsonl"]
EXTRA = "_extra"  # the first surplus field of a row with too many fields ("" when none)
CHUNK_BYTES = 16 << 20  # per batch: bounds ingest memory (~25x this at peak)
_MAX_RECORD_BYTES = 64 << 20  # a "record" this long is an unterminated quote
_SUFFIXES: dict[str, Format] = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}
_COMPRESSIONS = (".gz", ".gzip", ".bz2", ".xz", ".zst")
_READABLE = (".txt", *_SUFFIXES)


@dataclass
class Batch:
    """Rows of one file: string columns named by the header, plus `row` (1-based), `fields`
    (fields found in the record) and `_extra`; `replaced` when bad UTF-8 became U+FFFD."""

    frame: pl.DataFrame
    replaced: bool


def _strip_compression(path: str) -> str:
    lower = path.lower()
    for suffix in _COMPRESSIONS:
        if lower.endswith(suffix):
            return lower[: -len(suffix)]
    return lower


def list_files(source: str) -> list[str]:
    """A file, every review file of a directory (recursively), or a glob; sorted, as URLs/paths."""
    try:
        fs, path = url_to_fs(source)
    except (ValueError, ImportError) as err:
        raise InputError(
            f"{source}: cannot open ({err}); use a path or an http(s)/s3/gs URL"
        ) from None
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]

    def url(p: str) -> str:
        return p if protocol in ("file", "local") else fs.unstrip_protocol(p)

    if any(ch in path for ch in "*?["):
        found = sorted(p for p in fs.glob(path) if fs.isfile(p))
        if not found:
            raise InputError(f"{source}: no file matches this pattern")
        return [url(p) for p in found]
    if protocol in ("http", "https"):
        return [source]
    try:
        is_dir = fs.isdir(path)
        exists = is_dir or fs.exists(path)
    except OSError as err:
        raise InputError(f"{source}: cannot open ({err})") from None
    if not exists:
        raise InputError(f"{source}: no such file or directory")
    if not is_dir:
        return [source if protocol in ("file", "local") else url(path)]
    found = sorted(
        p
        for p in fs.find(path)
        if _strip_compression(p).endswith(_READABLE)
        and not p.rsplit("/", 1)[-1].startswith((".", "_"))
    )
    if not found:
        kinds = ", ".join(f"*{s}" for s in _SUFFIXES) + " (optionally .gz)"
        raise InputError(f"{source}: empty directory: no review file ({kinds}) in it")
    return [url(p) for p in found]


def input_digest(files: list[str]) -> str:
    """Content digest of the input files: sha256 of the bytes of local files; for remote files
    the store's own checksum (ETag/MD5 on object stores, size and date on http)."""
    import hashlib

    digest = hashlib.sha256()
    for file in files:
        fs, path = url_to_fs(file)
        digest.update(file.rsplit("/", 1)[-1].encode() + b"\0")
        if "file" in fs.protocol or "local" in fs.protocol or "memory" in fs.protocol:
            with fs.open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 22), b""):
                    digest.update(block)
        else:
            digest.update(str(fs.checksum(path)).encode())
    return digest.hexdigest()[:16]


def _open(file: str) -> tuple[IO[bytes], bytes]:
    """The file opened for reading (decompressed by extension or gzip magic) and its first bytes,
    already consumed from the handle."""
    compression = infer_compression(file.split("?", 1)[0])
    try:
        fh: IO[bytes] = fsspec.open(file, "rb", compression=compression).open()
        head = _read(file, fh, 1 << 16)
        if compression is None and head[:2] == b"\x1f\x8b":
            fh.close()
            fh = fsspec.open(file, "rb", compression="gzip").open()
            head = _read(file, fh, 1 << 16)
    except FileNotFoundError:
        raise InputError(f"{file}: no such file") from None
    except OSError as err:
        raise InputError(f"{file}: cannot open ({err})") from None
    return fh, head


def _read(file: str, fh: IO[bytes], size: int) -> bytes:
    try:
        return fh.read(size)
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise InputError(
            f"{file}: corrupt or truncated compressed file ({err}); download it again"
        ) from None


def detect_format(file: str, head: bytes, requested: str) -> Format:
    """`requested` unless "auto"; else the extension; else sniffed from the first bytes."""
    if requested != "auto":
        return requested  # type: ignore[return-value]
    if head.startswith(b"PAR1"):
        return "parquet"
    name = _strip_compression(file.split("?", 1)[0])
    for suffix, fmt in _SUFFIXES.items():
        if name.endswith(suffix):
            if fmt == "csv" and _sniff_separator(head) == "\t":
                return "tsv"  # a ".csv" that is tab separated
            return fmt
    if head.lstrip(b"\xef\xbb\xbf \r\n\t").startswith(b"{"):
        return "jsonl"
    return "tsv" if _sniff_separator(head) == "\t" else "csv"


def _sniff_separator(head: bytes) -> str:
    first = head.split(b"\n", 1)[0]
    counts = {sep: first.count(sep.encode()) for sep in (",", "\t", ";", "|")}
    best = max(counts, key=lambda sep: counts[sep])
    return best if counts[best] else ","


def separator_of(fmt: Format, head: bytes) -> str:
    if fmt == "tsv":
        return "\t"
    sniffed = _sniff_separator(head)
    return sniffed if sniffed in (";", "|") else ","


def _decode(file: str, data: bytes, first: bool) -> tuple[str, bool]:
    try:
        return data.decode("utf-8-sig" if first else "utf-8"), False
    except UnicodeDecodeError as err:
        log.warning(
            "%s: not UTF-8 (bad byte near offset %d); those rows quarantined", file, err.start
        )
        return data.decode("utf-8-sig" if first else "utf-8", errors="replace"), True


def _record_chunks(
    file: str, fh: IO[bytes], head: bytes, quoted: bool, size: int
) -> Iterator[bytes]:
    """Byte chunks of whole records: each ends with a newline outside quotes (the last may not).

    `head` is what was already read from `fh`.
    """
    carry = b""
    block = head
    while True:
        if not block:
            block = _read(file, fh, size)
        if not block:
            if carry:
                yield carry
            return
        buf, block = carry + block, b""
        cut = buf.rfind(b"\n") + 1
        if quoted and cut:
            quotes = buf.count(b'"', 0, cut)
            while cut and quotes % 2:
                previous = buf.rfind(b"\n", 0, cut - 1) + 1
                quotes -= buf.count(b'"', previous, cut)
                cut = previous
        if cut == 0:
            if len(buf) > _MAX_RECORD_BYTES:
                raise InputError(
                    f"{file}: a record longer than {_MAX_RECORD_BYTES >> 20} MB (a '\"' that never"
                    " closes?); fix the quoting or export as TSV"
                )
            carry = buf
            continue
        carry = buf[cut:]
        yield buf[:cut]


def _split_header(file: str, text: str, separator: str, quoted: bool) -> tuple[list[str], str]:
    line, _, rest = text.partition("\n")
    if "\x00" in line:
        raise InputError(f"{file}: binary data, not a {separator!r}-separated text file")
    header = next(
        csv.reader(
            [line.rstrip("\r")],
            delimiter=separator,
            quoting=csv.QUOTE_MINIMAL if quoted else csv.QUOTE_NONE,
        ),
        [],
    )
    return [name.strip() for name in header], rest


def unique_names(file: str, names: list[str]) -> list[str]:
    """Blank names (an unnamed index column) become `_unnamed_<i>`; a repeated name gets `~<i>`."""
    out: list[str] = []
    for i, name in enumerate(names):
        name = name or f"_unnamed_{i}"
        out.append(name if name not in out else f"{name}~{i}")
    return out


def _field_counts(lines: pl.Series, separator: str, quoted: bool) -> pl.Series:
    """Fields per record (0 for a blank line), from the raw lines; no CSV parser involved.

    With quoting, a record ends on the first line after which an even number of quotes has been
    seen. Each line's separators outside quotes are counted after closing the quote it starts or
    ends inside of and dropping quoted text; a record's count is the sum over its lines, taken
    from a running sum at the record's last line (no group-by: this runs on every chunk).
    """
    if lines.len() and lines[-1] == "":
        lines = lines.head(-1)
    line = pl.col("line")
    frame = lines.str.strip_suffix("\r").alias("line").to_frame()
    if not quoted:
        fields = line.str.count_matches(separator, literal=True) + 1
        blank = line.str.strip_chars() == ""
        return frame.select(pl.when(blank).then(0).otherwise(fields)).to_series()
    quotes = line.str.count_matches('"', literal=True)
    frame = frame.with_columns(
        starts_inside=(quotes.cum_sum() - quotes) % 2 == 1,
        ends_inside=quotes.cum_sum() % 2 == 1,
    )
    closed = pl.concat_str(
        pl.when("starts_inside").then(pl.lit('"')).otherwise(pl.lit("")),
        line,
        pl.when("ends_inside").then(pl.lit('"')).otherwise(pl.lit("")),
    )
    # `closed` has balanced quotes, so a scan for quoted text or a separator only ever finds a
    # separator outside quotes; minus the quoted texts, that counts them without a copy.
    quoted_or_separator = f'"[^"]*"|[{separator}]'
    separators = (
        closed.str.count_matches(quoted_or_separator)
        - (quotes + pl.col("starts_inside").cast(pl.UInt32) + pl.col("ends_inside").cast(pl.UInt32))
        // 2
    )
    last_line = pl.int_range(pl.len()) == pl.len() - 1
    records = frame.select(
        separators.cum_sum().alias("running"),
        (~pl.col("starts_inside") & (line.str.strip_chars() == "")).alias("blank"),
        (~pl.col("ends_inside") | last_line).alias("ends"),
    ).filter("ends")
    fields = pl.col("running").diff().fill_null(pl.col("running")) + 1
    return records.select(pl.when("blank").then(0).otherwise(fields)).to_series()


def _parse_chunk(
    file: str, text: str, columns: list[str], separator: str, quoted: bool, first_row: int
) -> pl.DataFrame:
    width = len(columns)
    names = [*columns, EXTRA]
    if not text.strip():
        return pl.DataFrame(
            schema={**dict.fromkeys(names, pl.String), "fields": pl.Int64, "row": pl.Int64}
        )
    try:
        rows = pl.read_csv(
            text.encode(),
            has_header=False,
            separator=separator,
            quote_char='"' if quoted else None,
            schema={f"c{i}": pl.String for i in range(width + 1)},
            missing_columns="insert",
            truncate_ragged_lines=True,
            empty_string_is_null=False,
        )
    except pl.exceptions.ComputeError as err:
        # An unclosed or stray quote leaves every later row ambiguous: refuse the file.
        first = str(err).strip().splitlines()[0]
        raise InputError(
            f"{file}: malformed CSV quoting after row {first_row - 1} ({first}); "
            "fix the stray '\"' or export as TSV"
        ) from None
    rows = rows.rename({f"c{i}": name for i, name in enumerate(names)})
    counts = _field_counts(pl.Series([text]).str.split("\n").explode(), separator, quoted)
    if counts.len() == rows.height:
        fields: pl.Expr | pl.Series = counts
    else:
        log.warning("%s: irregular quoting; only rows with too many fields are detected", file)
        blank = pl.all_horizontal(pl.col(c) == "" for c in names)
        fields = pl.when(blank).then(0).otherwise(width + (pl.col(EXTRA) != "").cast(pl.Int64))
    rows = rows.with_columns(pl.lit(fields).cast(pl.Int64).alias("fields")).with_row_index(
        "row", offset=first_row
    )
    return rows.with_columns(pl.col("row").cast(pl.Int64))


def _text_batches(
    file: str, fh: IO[bytes], head: bytes, fmt: Format, separator: str, chunk_bytes: int
) -> Iterator[tuple[list[str], Batch]]:
    quoted = fmt == "csv"
    columns: list[str] | None = None
    row = 1
    for i, chunk in enumerate(_record_chunks(file, fh, head, quoted, chunk_bytes)):
        text, replaced = _decode(file, chunk, first=i == 0)
        if columns is None:
            if replaced and "\ufffd" in text.partition("\n")[0]:
                raise InputError(
                    f"{file}: the header is not UTF-8 text; re-encode the file as UTF-8"
                )
            header, text = _split_header(file, text, separator, quoted)
            if not any(header):
                raise InputError(f"{file}: empty file; expected a header row and reviews")
            columns = unique_names(file, header)
        frame = _parse_chunk(file, text, columns, separator, quoted, row)
        row += frame.height
        yield columns, Batch(frame.filter(pl.col("fields") > 0), replaced)
    if columns is None:
        raise InputError(f"{file}: empty file; expected a header row and reviews")


def _as_strings(frame: pl.DataFrame, columns: list[str], first_row: int) -> pl.DataFrame:
    """`frame` (string columns) on the header's columns, missing ones empty, plus row/fields."""
    out = frame.select(
        (pl.col(c) if c in frame.columns else pl.lit(None, pl.String)).fill_null("").alias(c)
        for c in columns
    )
    return (
        out.with_columns(pl.lit("").alias(EXTRA), pl.lit(len(columns), pl.Int64).alias("fields"))
        .with_row_index("row", offset=first_row)
        .with_columns(pl.col("row").cast(pl.Int64))
    )


def _stringify(frame: pl.DataFrame) -> pl.DataFrame:
    """Every column as a string; nested values as JSON."""

    def as_string(name: str, dtype: pl.DataType) -> pl.Expr:
        if isinstance(dtype, pl.Struct | pl.List | pl.Array):
            return pl.struct(pl.col(name).alias("v")).struct.json_encode().str.slice(5).str.head(-1)
        return pl.col(name).cast(pl.String)

    return frame.select(as_string(n, d).alias(n) for n, d in frame.schema.items())


def _json_lines(lines: pl.Series) -> tuple[pl.DataFrame, pl.Series]:
    """JSON Lines → string frame and a flag per line for lines that are not a JSON object.

    polars parses the batch; only when it refuses (a malformed line) are that batch's lines parsed
    one by one, to find the bad ones.
    """
    try:
        frame = pl.read_ndjson(lines.str.join("\n").item().encode(), infer_schema_length=None)
        if frame.height == lines.len():
            return _stringify(frame), pl.Series("bad_json", [False] * frame.height)
    except pl.exceptions.PolarsError:
        pass
    records, flags = [], []
    for line in lines.to_list():
        try:
            value = json.loads(line)
        except ValueError:
            value = None
        ok = isinstance(value, dict)
        records.append(
            {k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in value.items()}
            if ok
            else {}
        )
        flags.append(not ok)
    frame = pl.DataFrame(records, infer_schema_length=None) if records else pl.DataFrame()
    return _stringify(frame), pl.Series("bad_json", flags)


def _json_batches(
    file: str, fh: IO[bytes], head: bytes, chunk_bytes: int
) -> Iterator[tuple[list[str], Batch]]:
    columns: list[str] | None = None
    row = 1
    for i, chunk in enumerate(_record_chunks(file, fh, head, False, chunk_bytes)):
        text, replaced = _decode(file, chunk, first=i == 0)
        lines = pl.Series("line", [text]).str.split("\n").explode().str.strip_suffix("\r")
        lines = lines.filter(lines.str.strip_chars() != "")
        if lines.len() == 0:
            continue
        frame, bad = _json_lines(lines)
        if columns is None:
            if not frame.columns:
                raise InputError(
                    f"{file}: line 1 is not a JSON object; expected JSON Lines (one object a line)"
                )
            columns = frame.columns
        out = _as_strings(frame, columns, row).with_columns(bad, lines.alias("_raw"))
        row += out.height
        yield columns, Batch(out, replaced)
    if columns is None:
        raise InputError(f"{file}: empty file; expected JSON objects, one per line")


def _parquet_batches(file: str, fh: IO[bytes]) -> Iterator[tuple[list[str], Batch]]:
    try:
        parquet = pq.ParquetFile(fh)
    except Exception as err:  # pyarrow raises ArrowInvalid and friends
        raise InputError(f"{file}: not a readable Parquet file ({err})") from None
    columns = unique_names(file, parquet.schema_arrow.names)
    row = 1
    for record_batch in parquet.iter_batches(batch_size=200_000):
        frame = pl.from_arrow(record_batch)
        assert isinstance(frame, pl.DataFrame)
        frame.columns = columns
        out = _as_strings(_stringify(frame), columns, row)
        row += out.height
        yield columns, Batch(out, False)


def open_batches(
    file: str, requested_format: str = "auto", chunk_bytes: int = CHUNK_BYTES
) -> Iterator[tuple[list[str], Batch]]:
    """(header, batch) for each batch of rows of `file`; the header is the same for every batch."""
    fh, head = _open(file)
    with fh:
        fmt = detect_format(file, head, requested_format)
        if fmt == "parquet":
            fh.seek(0)
            yield from _parquet_batches(file, fh)
        elif fmt == "jsonl":
            yield from _json_batches(file, fh, head, chunk_bytes)
        else:
            separator = separator_of(fmt, head)
            yield from _text_batches(file, fh, head, fmt, separator, chunk_bytes)


def read_ahead(items: Iterator[_T], depth: int = 1) -> Iterator[_T]:
    """`items`, produced on a background thread at most `depth` ahead of the consumer, so that
    reading and parsing the next batch overlaps validating and writing this one (polars releases
    the GIL). Errors reach the consumer; a consumer that stops early stops the producer."""
    queue: Queue[tuple[bool, object]] = Queue(maxsize=depth)
    stop = threading.Event()

    def put(done: bool, value: object) -> bool:
        while not stop.is_set():
            try:
                queue.put((done, value), timeout=0.1)
                return True
            except Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(False, item):
                    return
            put(True, None)
        except BaseException as err:  # handed to the consumer, raised there
            put(True, err)

    producer = threading.Thread(target=produce, name="read-ahead", daemon=True)
    producer.start()
    try:
        while True:
            try:
                done, value = queue.get(timeout=0.1)
            except Empty:
                if not producer.is_alive() and queue.empty():
                    return
                continue
            if done:
                if isinstance(value, BaseException):
                    raise value
                return
            yield value  # type: ignore[misc]
    finally:
        stop.set()
        producer.join()
