"""Where reviews come from: files, directories and globs, local or through fsspec, read in batches.

`open_batches` yields, for one file, batches of rows as polars frames of strings, never the whole
file: CSV/TSV and JSON Lines are read in byte chunks cut at record boundaries (for quoted text, a
newline outside quotes), Parquet by record batches. Memory stays bounded by the chunk size,
whatever the file size.

Quoting is decided per file, not per extension (`detect_quoting`): real TSV exports quote fields
that hold tabs or line breaks, while the Amazon Customer Reviews TSVs are unquoted and a review may
start with a stray `"`. UTF-16 text (with a BOM) and `\r`-only line ends are converted to UTF-8 and
`\n` as the bytes are read; `.zip` archives are listed as their members.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import json
import logging
import os
import re
import threading
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from queue import Empty, Full, Queue
from typing import IO, Literal, TypeVar, cast

import fsspec
import polars as pl
import pyarrow.parquet as pq
from fsspec.core import url_to_fs
from fsspec.utils import infer_compression

from tasks.config import HTTP_CONNECT_TIMEOUT_S, HTTP_READ_TIMEOUT_S, HTTP_RETRY_DELAYS_S
from tasks.files import feed
from tasks.records import InputError

log = logging.getLogger(__name__)
_T = TypeVar("_T")

Format = Literal["csv", "tsv", "parquet", "jsonl"]
Quoting = Literal["csv", "none"]  # what a text file is read with ("auto" is decided per file)
EXTRA = "_extra"  # the first surplus field of a row with too many fields ("" when none)
CHUNK_BYTES = 16 << 20  # per batch: bounds ingest memory (~25x this at peak)
_MAX_RECORD_BYTES = 64 << 20  # a "record" this long is an unterminated quote
_DETECT_BYTES = 1 << 20  # quoting=auto decides from this much of the start of a file
_OPEN_QUOTE_TAIL = 64 << 10  # a quote still open this close to the sample's end: cut, not stray
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
_ARCHIVES = (".zip",)


@dataclass
class Batch:
    """Rows of one file: string columns named by the header, plus `row` (1-based), `fields`
    (fields found in the record) and `_extra`; `replaced` when bad UTF-8 became U+FFFD."""

    frame: pl.DataFrame
    replaced: bool
    quoting: Quoting | None = None  # CSV/TSV only
    # The chunk's UTF-8 that `_start`/`_len` (CSV/TSV, when present) index: quarantined records
    # are kept whole from it.
    data: bytes | None = None


def _name(file: str) -> str:
    """The file's own name part: a zip member's, not its archive's; without a URL query."""
    return file.split("::", 1)[0].split("?", 1)[0]


def _strip_compression(path: str) -> str:
    lower = path.lower()
    for suffix in _COMPRESSIONS:
        if lower.endswith(suffix):
            return lower[: -len(suffix)]
    return lower


def list_files(source: str) -> list[str]:
    """A file, every review file of a directory (recursively), or a glob; sorted, as URLs/paths."""
    try:
        fs, path = url_to_fs(source, **_http_options(source))
    except ImportError as err:  # s3fs, gcsfs… are optional
        raise InputError(f"{source}: {err} (`uv pip install` it to read this URL)") from None
    except ValueError as err:
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
        return _with_members([url(p) for p in found])
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
        return _with_members([source if protocol in ("file", "local") else url(path)])
    found = sorted(p for p in fs.find(path) if _listed(p, (*_READABLE, *_ARCHIVES)))
    if not found:
        kinds = ", ".join(f"*{s}" for s in (*_SUFFIXES, *_ARCHIVES)) + " (optionally .gz)"
        raise InputError(f"{source}: empty directory: no review file ({kinds}) in it")
    return _with_members([url(p) for p in found])


def _listed(path: str, suffixes: tuple[str, ...]) -> bool:
    name = path.rsplit("/", 1)[-1]
    return _strip_compression(path).endswith(suffixes) and not name.startswith((".", "_"))


def _with_members(files: list[str]) -> list[str]:
    """`files` with each .zip archive replaced by its review files (fsspec `zip://m::archive`)."""
    out: list[str] = []
    for file in files:
        if not _name(file).lower().endswith(_ARCHIVES):
            out.append(file)
            continue
        try:
            archive = fsspec.filesystem("zip", fo=file)
            members = sorted(
                p
                for p in archive.find("")
                if _listed(p, _READABLE) and not p.startswith("__MACOSX/")
            )
        except (OSError, ValueError, zipfile.BadZipFile) as err:
            raise InputError(f"{file}: not a readable zip archive ({err})") from None
        if not members:
            raise InputError(f"{file}: no review file in this zip archive")
        out += [f"zip://{member}::{file}" for member in members]
    return out


def input_digest(files: list[str]) -> str:
    """Content digest of the input files: sha256 of the bytes of local files; for remote files
    the store's own checksum (ETag/MD5 on object stores, size and date on http)."""
    import hashlib

    digest = hashlib.sha256()
    for file in files:
        fs, path = url_to_fs(file, **_http_options(file))
        digest.update(file.rsplit("/", 1)[-1].encode() + b"\0")
        if "file" in fs.protocol or "local" in fs.protocol or "memory" in fs.protocol:
            with fs.open(path, "rb") as fh:
                feed(digest, fh)
        else:
            checksum = with_network_retries(file, lambda: fs.checksum(path))  # noqa: B023
            digest.update(str(checksum).encode())
    return digest.hexdigest()[:16]


class _Holding:
    """A handle that keeps what it was opened through alive: a zip member's handle reads through
    its archive's filesystem, which fsspec would otherwise collect (and close) at once."""

    def __init__(self, fh: IO[bytes], opened: fsspec.core.OpenFile) -> None:
        self.fh, self.opened = fh, opened

    def __getattr__(self, name: str) -> object:
        return getattr(self.fh, name)

    def close(self) -> None:
        self.fh.close()
        self.opened.close()

    def __enter__(self) -> _Holding:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SourceUnavailable(OSError):
    """A source that could not be read for a reason that may pass (server down, timeouts, HTTP
    5xx), after the retries: not bad input, and not worth more retries right now."""


def _is_http(file: str) -> bool:
    return file.startswith(("http://", "https://"))


def _http_options(file: str) -> dict[str, object]:
    """fsspec options bounding how long an http(s) read may wait: aiohttp's default is 5 minutes
    per request, which a dead host spends in full."""
    if not _is_http(file):
        return {}
    import aiohttp

    timeout = aiohttp.ClientTimeout(
        total=None, sock_connect=HTTP_CONNECT_TIMEOUT_S, sock_read=HTTP_READ_TIMEOUT_S
    )
    return {"client_kwargs": {"timeout": timeout}}


def _network_failure(file: str, error: BaseException) -> Exception | None:
    """What a failed http(s) request means: InputError (the URL is wrong or forbidden: fix it),
    SourceUnavailable (nobody answers there: no use retrying at once), or None: transient (a
    timeout, HTTP 5xx), worth a retry. fsspec wraps the aiohttp error in a FileNotFoundError."""
    import aiohttp

    cause = error.__cause__ or error
    if isinstance(cause, aiohttp.ClientResponseError):
        if cause.status >= 500 or cause.status in (408, 429):
            return None
        what = {401: "access denied", 403: "access denied", 404: "not found", 410: "gone"}
        todo = "check the URL" + (" and its credentials" if cause.status in (401, 403) else "")
        reason = what.get(cause.status, cause.message)
        return InputError(f"{file}: {reason} (HTTP {cause.status}); {todo}")
    if isinstance(cause, aiohttp.ClientConnectorDNSError):
        return InputError(f"{file}: unknown host ({cause.os_error}); check the URL")
    if isinstance(cause, aiohttp.ClientConnectorError):
        refused = cause.os_error
        reason = os.strerror(refused.errno) if refused.errno else str(refused)
        return SourceUnavailable(
            f"{file}: cannot connect ({reason}); check the URL and that its server is up, then "
            "run again"
        )
    if isinstance(cause, TimeoutError | aiohttp.ServerDisconnectedError | aiohttp.ClientOSError):
        return None
    return InputError(f"{file}: cannot open ({cause}); check the URL")


def with_network_retries(file: str, read: Callable[[], _T]) -> _T:
    """`read()`, retried after each pause of HTTP_RETRY_DELAYS_S while an http(s) source fails
    transiently; a wrong URL, a refused connection or a 4xx fails at once."""
    if not _is_http(file):
        return read()
    for attempt, delay in enumerate((*HTTP_RETRY_DELAYS_S, None), start=1):
        try:
            return read()
        except (OSError, TimeoutError) as error:  # aiohttp's errors are OSErrors, or wrapped in one
            if isinstance(error, InputError | SourceUnavailable):
                raise
            failure = _network_failure(file, error)
            if failure is not None:
                raise failure from None
            if delay is None:
                raise SourceUnavailable(
                    f"{file}: failed {attempt} times ({error.__cause__ or error}); the server "
                    "may be overloaded: run again later"
                ) from None
            log.warning("%s: %s; retrying in %.1f s", file, error.__cause__ or error, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def _open_stream(file: str, compression: str | None) -> IO[bytes]:
    opened = fsspec.open(file, "rb", compression=compression, **_http_options(file))
    fh: IO[bytes] = opened.open()
    return cast(IO[bytes], _Holding(fh, opened)) if "::" in file else fh


def _open(file: str) -> tuple[IO[bytes], bytes]:
    """The file opened for reading (decompressed by extension or gzip magic) and its first bytes,
    already consumed from the handle."""
    compression = infer_compression(_name(file))

    def open_and_read_head() -> tuple[IO[bytes], bytes]:
        fh: IO[bytes] = _open_stream(file, compression)
        head = _read(file, fh, 1 << 16)
        if compression is None and head[:2] == b"\x1f\x8b":
            fh.close()
            fh = _open_stream(file, "gzip")
            head = _read(file, fh, 1 << 16)
        return fh, head

    try:
        return with_network_retries(file, open_and_read_head)
    except (InputError, SourceUnavailable):
        raise
    except FileNotFoundError:
        raise InputError(f"{file}: no such file") from None
    except OSError as err:
        raise InputError(f"{file}: cannot open ({err})") from None


def check_readable(source: str) -> None:
    """Fail now, before any run starts, when `source` cannot be listed or an http(s) file of it
    cannot be opened: a dead URL costs seconds, not a flow run."""
    for file in list_files(source):
        if _is_http(file):
            fh, _ = _open(file)
            fh.close()


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
    name = _strip_compression(_name(file))
    for suffix, fmt in _SUFFIXES.items():
        if name.endswith(suffix):
            if fmt == "csv" and _sniff_separator(head) == "\t":
                return "tsv"  # a ".csv" that is tab separated
            return fmt
    if head.lstrip(b"\xef\xbb\xbf \r\n\t").startswith((b"{", b"[")):
        return "jsonl"  # JSON Lines, or one JSON array of objects
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


class _Recoded:
    """A byte stream read through a conversion of its blocks (`convert(block, final)`)."""

    def __init__(self, fh: IO[bytes], convert: Callable[[bytes, bool], bytes]) -> None:
        self.fh = fh
        self.convert = convert

    def read(self, size: int = -1) -> bytes:
        while True:
            block = self.fh.read(size)
            out = self.convert(block, not block)
            if out or not block:
                return out

    def close(self) -> None:
        self.fh.close()

    def __enter__(self) -> _Recoded:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _as_utf8_lines(file: str, fh: IO[bytes], head: bytes) -> tuple[IO[bytes], bytes]:
    """UTF-16 with a BOM (Excel's "Unicode text") → UTF-8; `\r`-only line ends → `\n`.

    Both conversions are on the stream, so chunking, sniffing and parsing see UTF-8 with `\n`.
    A UTF-8 byte 0x0D is always a carriage return, never part of a multi-byte character.
    """
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        decoder = codecs.getincrementaldecoder("utf-16")()

        def utf16_to_utf8(block: bytes, final: bool) -> bytes:
            try:
                return decoder.decode(block, final).encode()
            except UnicodeDecodeError as err:
                raise InputError(
                    f"{file}: starts with a UTF-16 byte order mark but is not UTF-16"
                    f" ({err.reason}); re-export it as UTF-8"
                ) from None

        fh, head = cast(IO[bytes], _Recoded(fh, utf16_to_utf8)), utf16_to_utf8(head, False)
    if b"\r" in head and b"\n" not in head:
        fh = cast(IO[bytes], _Recoded(fh, lambda block, final: block.replace(b"\r", b"\n")))
        head = head.replace(b"\r", b"\n")
    return fh, head


def detect_quoting(sample: str, separator: str, complete: bool) -> Quoting:
    """ "csv" when the sample reads as quoted text, else "none".

    Quoted: some field opens with a quote, every field that does is a well-formed quoted field (a
    closing quote followed by the separator or a line end, quotes inside doubled), no unquoted
    field holds a quote, and the records then have the header's field count at least as often as
    the lines do read unquoted. A stray quote (a review starting with `5" screen` or `"Great"
    product`) fails the second test. A sample without any quote says nothing: it keeps the
    convention, quoted CSV and unquoted TSV (the Amazon dumps), as before quoting was detected.
    `complete` says whether the sample is the whole file; when it is not, its last record may be
    cut, even inside quotes.
    """
    if '"' not in sample:
        return "none" if separator == "\t" else "csv"
    sep = re.escape(separator)
    field = re.compile(rf'(?:("[^"]*(?:""[^"]*)*")|[^"{sep}\r\n]*)({sep}|\r\n|\n|\r|\Z)')
    open_quote = re.compile(r'"[^"]*(?:""[^"]*)*\Z')
    width: int | None = None
    pos, start, fields, quoted_fields, records, consistent = 0, 0, 1, 0, 0, 0
    while pos < len(sample):
        match = field.match(sample, pos)
        if match is None:
            cut = open_quote.match(sample, pos) and len(sample) - pos < _OPEN_QUOTE_TAIL
            if complete or not cut:
                return "none"
            break
        quoted_fields += match.group(1) is not None
        pos, end = match.end(), match.group(2)
        if end == separator:
            fields += 1
            continue
        if end == "" and not complete:
            break  # the sample's last record, cut
        if match.end() - start > len(end):  # not a blank line
            width = width or fields  # the header's
            records += 1
            consistent += fields == width
        start, fields = pos, 1
    if not quoted_fields or records < 2:
        return "none"
    lines = [line for line in sample[:start].split("\n") if line.strip()]
    unquoted = sum(line.count(separator) + 1 == width for line in lines)
    return "csv" if consistent / records >= unquoted / len(lines) else "none"


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

    `head` is what was already read from `fh` (up to 1 MB when quoting was detected); it is cut
    into `size` pieces too, so small chunks stay small.
    """
    carry = b""
    while True:
        if head:
            block, head = head[:size], head[size:]
        else:
            block = _read(file, fh, size)
        if not block:
            if carry:
                yield carry
            return
        buf = carry + block
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


def _records(lines: pl.Series, separator: str, quoted: bool) -> pl.DataFrame:
    """Per record: `fields` (0 for a blank line), and where it is in the text the lines were split
    from (`_start`, `_len`, in UTF-8 bytes, its line end left out); no CSV parser involved.

    With quoting, a record ends on the first line after which an even number of quotes has been
    seen. Each line's separators outside quotes are counted after closing the quote it starts or
    ends inside of and dropping quoted text; a record's count is the sum over its lines, taken
    from a running sum at the record's last line (no group-by: this runs on every chunk); so is
    its end.
    """
    if lines.len() and lines[-1] == "":
        lines = lines.head(-1)
    line = pl.col("line")
    frame = lines.alias("line").to_frame()
    ends = (line.str.len_bytes().cast(pl.Int64) + 1).cum_sum()  # just past each line's "\n"
    frame = frame.with_columns(ends.alias("end"), line.str.strip_suffix("\r"))
    start = pl.col("end").shift(1, fill_value=0)
    offsets = (start.alias("_start"), (pl.col("end") - start - 1).alias("_len"))
    if not quoted:
        fields = line.str.count_matches(separator, literal=True) + 1
        blank = line.str.strip_chars() == ""
        return frame.select(pl.when(blank).then(0).otherwise(fields).alias("fields"), *offsets)
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
        "end",
    ).filter("ends")
    fields = pl.col("running").diff().fill_null(pl.col("running")) + 1
    return records.select(pl.when("blank").then(0).otherwise(fields).alias("fields"), *offsets)


def _parse_chunk(
    file: str,
    text: str,
    data: bytes,
    columns: list[str],
    separator: str,
    quoted: bool,
    first_row: int,
) -> pl.DataFrame:
    """`text` (and `data`, its UTF-8) as rows of `columns` + `_extra`, with `row` and `fields`,
    and `_start`/`_len` of each record in `data` unless the quoting is irregular."""
    width = len(columns)
    names = [*columns, EXTRA]
    if not text.strip():
        return pl.DataFrame(
            schema={**dict.fromkeys(names, pl.String), "fields": pl.Int64, "row": pl.Int64}
        )
    try:
        rows = pl.read_csv(
            data,
            has_header=False,
            separator=separator,
            quote_char='"' if quoted else None,
            schema={f"c{i}": pl.String for i in range(width + 1)},
            missing_columns="insert",
            truncate_ragged_lines=True,
            extra_columns="ignore",  # a first row with surplus fields (it is counted apart)
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
    records = _records(pl.Series([text]).str.split("\n").explode(), separator, quoted)
    if records.height == rows.height:
        rows = rows.hstack(records.with_columns(pl.col("fields").cast(pl.Int64)))
    else:
        log.warning("%s: irregular quoting; only rows with too many fields are detected", file)
        blank = pl.all_horizontal(pl.col(c) == "" for c in names)
        fields = pl.when(blank).then(0).otherwise(width + (pl.col(EXTRA) != "").cast(pl.Int64))
        rows = rows.with_columns(fields.cast(pl.Int64).alias("fields"))
    rows = rows.with_row_index("row", offset=first_row)
    return rows.with_columns(pl.col("row").cast(pl.Int64))


def _choose_quoting(
    file: str, fh: IO[bytes], head: bytes, separator: str, requested: str
) -> tuple[Quoting, bytes]:
    """The quoting to read `file` with, and the bytes read so far (`head`, more for auto)."""
    if requested != "auto":
        log.info("%s: read with quoting=%s (as configured)", file, requested)
        return cast(Quoting, requested), head
    more = _read(file, fh, _DETECT_BYTES - len(head)) if len(head) < _DETECT_BYTES else b""
    complete = len(more) < _DETECT_BYTES - len(head)
    head += more
    sample = head.decode("utf-8-sig", errors="replace")
    quoting = detect_quoting(sample, separator, complete)
    log.info(
        "%s: read with quoting=%s (auto: %s)",
        file,
        quoting,
        "the first MB reads as quoted fields"
        if quoting == "csv"
        else "the first MB does not read as quoted fields",
    )
    return quoting, head


def _text_batches(
    file: str,
    fh: IO[bytes],
    head: bytes,
    separator: str,
    requested_quoting: str,
    chunk_bytes: int,
) -> Iterator[tuple[list[str], Batch]]:
    quoting, head = _choose_quoting(file, fh, head, separator, requested_quoting)
    quoted = quoting == "csv"
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
        data = text.encode()
        frame = _parse_chunk(file, text, data, columns, separator, quoted, row)
        row += frame.height
        yield columns, Batch(frame.filter(pl.col("fields") > 0), replaced, quoting, data)
    if columns is None:
        raise InputError(f"{file}: empty file; expected a header row and reviews")


def _as_strings(
    frame: pl.DataFrame, columns: list[str], first_row: int, height: int | None = None
) -> pl.DataFrame:
    """`frame` (string columns) on the header's columns, missing ones empty, plus row/fields;
    `height` rows (a frame of bad JSON lines only has no column to give it)."""
    height = frame.height if height is None else height
    out = frame.select(
        (
            pl.col(c).fill_null("")
            if c in frame.columns
            else pl.repeat("", height, dtype=pl.String)
        ).alias(c)
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


def _json_line_chunks(
    file: str, fh: IO[bytes], head: bytes, chunk_bytes: int
) -> Iterator[tuple[pl.Series, bool]]:
    """JSON Lines: the non-blank lines of each chunk, and whether bad UTF-8 was replaced."""
    for i, chunk in enumerate(_record_chunks(file, fh, head, False, chunk_bytes)):
        text, replaced = _decode(file, chunk, first=i == 0)
        lines = pl.Series("line", [text]).str.split("\n").explode().str.strip_suffix("\r")
        yield lines.filter(lines.str.strip_chars() != ""), replaced


_ARRAY_GAP = re.compile(r"\s*(?:,\s*)?")


def _json_array_chunks(
    file: str, fh: IO[bytes], head: bytes, chunk_bytes: int
) -> Iterator[tuple[pl.Series, bool]]:
    """A JSON array of objects (`[{…}, {…}]`) as JSON Lines: each element's text on one line
    (JSON has no raw line break inside strings, so those outside are only whitespace), in batches
    of about `chunk_bytes`. Read as a stream; an element that does not parse refuses the file:
    unlike a JSON line, there is no telling where the next one starts."""
    decoder = json.JSONDecoder()
    utf8 = codecs.getincrementaldecoder("utf-8-sig")(errors="replace")
    text, eof = utf8.decode(head), False
    pos, elements, batch, size = text.index("[") + 1, 0, [], 0
    while True:
        gap = _ARRAY_GAP.match(text, pos)
        pos = gap.end() if gap else pos
        if pos < len(text) and text[pos] == "]":
            break
        try:
            value, end = decoder.raw_decode(text, pos)
            # a number at the very end of what was read may go on in the next block
            cut = end == len(text) and not eof and not isinstance(value, dict | list | str)
        except ValueError:
            value, end, cut = None, pos, True
        if cut:
            if eof or len(text) - pos > _MAX_RECORD_BYTES:
                raise InputError(
                    f"{file}: not a valid JSON array after its element {elements}; fix it or"
                    " export JSON Lines (one object a line)"
                )
            block = _read(file, fh, chunk_bytes)
            eof = not block
            text, pos = text[pos:] + utf8.decode(block, eof), 0
            continue
        batch.append(text[pos:end].replace("\n", " ").replace("\r", " "))
        elements += 1
        size += end - pos
        pos = end
        if size >= chunk_bytes:
            yield pl.Series("line", batch), any("\ufffd" in line for line in batch)
            batch, size = [], 0
            text, pos = text[pos:], 0
    if batch:
        yield pl.Series("line", batch), any("\ufffd" in line for line in batch)


def _json_batches(
    file: str, fh: IO[bytes], head: bytes, chunk_bytes: int
) -> Iterator[tuple[list[str], Batch]]:
    columns: list[str] | None = None
    row = 1
    is_array = head.lstrip(b"\xef\xbb\xbf \r\n\t").startswith(b"[")
    chunks = (_json_array_chunks if is_array else _json_line_chunks)(file, fh, head, chunk_bytes)
    for lines, replaced in chunks:
        if lines.len() == 0:
            continue
        frame, bad = _json_lines(lines)
        if columns is None:
            if not frame.columns:
                raise InputError(
                    f"{file}: line 1 is not a JSON object; expected JSON Lines (one object a line)"
                )
            columns = frame.columns
        out = _as_strings(frame, columns, row, lines.len()).with_columns(bad, lines.alias("_raw"))
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
    file: str,
    requested_format: str = "auto",
    chunk_bytes: int = CHUNK_BYTES,
    quoting: str = "auto",
) -> Iterator[tuple[list[str], Batch]]:
    """(header, batch) for each batch of rows of `file`; the header is the same for every batch.

    `quoting` (CSV/TSV): "csv", "none", or "auto" to decide from the start of the file.
    """
    fh, head = _open(file)
    with fh:
        if not head.startswith(b"PAR1"):
            fh, head = _as_utf8_lines(file, fh, head)
        fmt = detect_format(file, head, requested_format)
        if fmt == "parquet":
            fh.seek(0)
            yield from _parquet_batches(file, fh)
        elif fmt == "jsonl":
            yield from _json_batches(file, fh, head, chunk_bytes)
        else:
            separator = separator_of(fmt, head)
            yield from _text_batches(file, fh, head, separator, quoting, chunk_bytes)


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
