"""Every input format and location gives the same snapshot for the same reviews."""

import codecs
import csv
import gzip
import http.server
import io
import json
import threading
import zipfile
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import fsspec
import pandas as pd
import polars as pl
import pytest

from tasks.config import IngestConfig
from tasks.ingest.snapshot import ingest
from tasks.ingest.sources import detect_quoting
from tasks.records import InputError

REVIEWS = pl.DataFrame(
    {
        "review_id": ["R1", "R2", "R3"],
        "star_rating": ["5", "3", "1"],
        "review_title": ["Great", "Okay, I guess", "Bad"],
        "review_body": ["Love it.<br />Works", 'It is "fine"', "Broke\nafter a day"],
    }
)


@pytest.fixture
def reference(tmp_path: Path) -> str:
    path = tmp_path / "ref.csv"
    REVIEWS.write_csv(path)
    return ingest(str(path), IngestConfig(), tmp_path / "ref").digest


def _write(fmt: str, path: Path) -> None:
    if fmt == "csv":
        REVIEWS.write_csv(path)
    elif fmt == "tsv":  # dumps are unquoted TSV: no tab or newline inside fields
        flat = REVIEWS.with_columns(pl.col("review_body").str.replace("\n", " "))
        path.write_text(flat.write_csv(separator="\t", quote_style="never"))
    elif fmt == "parquet":
        REVIEWS.with_columns(pl.col("star_rating").cast(pl.Int64)).write_parquet(path)
    elif fmt == "jsonl":
        REVIEWS.with_columns(pl.col("star_rating").cast(pl.Int64)).write_ndjson(path)


@pytest.mark.parametrize(
    "name", ["r.csv", "r.csv.gz", "r.parquet", "r.jsonl", "r.jsonl.gz", "r.ndjson"]
)
def test_each_format_gives_the_same_snapshot(tmp_path: Path, reference: str, name: str) -> None:
    fmt = {"ndjson": "jsonl"}.get(name.split(".")[1], name.split(".")[1])
    path = tmp_path / name
    _write(fmt, tmp_path / "plain")
    data = (tmp_path / "plain").read_bytes()
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    snap = ingest(str(path), IngestConfig(), tmp_path / "out")
    assert (snap.rows_read, snap.rows_ok) == (3, 3)
    assert snap.digest == reference


def test_tsv_gz(tmp_path: Path) -> None:
    _write("tsv", tmp_path / "plain")
    (tmp_path / "r.tsv.gz").write_bytes(gzip.compress((tmp_path / "plain").read_bytes()))
    snap = ingest(str(tmp_path / "r.tsv.gz"), IngestConfig(), tmp_path / "out")
    frame = pl.read_parquet(snap.path)
    assert frame["text"].to_list()[1:] == ['Okay, I guess\nIt is "fine"', "Bad\nBroke after a day"]


@pytest.mark.parametrize(
    ("name", "content", "fmt"),
    [
        ("reviews", None, "auto"),  # no extension: sniffed as CSV
        ("reviews.txt", "tab", "auto"),  # sniffed as TSV
        ("reviews.csv", "tab", "auto"),  # a ".csv" that is tab separated
        ("reviews.csv", "semicolon", "auto"),
        ("reviews.dat", "jsonl", "auto"),  # sniffed as JSON Lines
        ("reviews.gz", "gzip", "auto"),  # gzip by magic, CSV by sniffing
        ("export.txt", "parquet", "parquet"),  # --format
        ("export.txt", "jsonl", "jsonl"),
    ],
)
def test_sniffing_and_format_flag(tmp_path: Path, name: str, content: str | None, fmt: str) -> None:
    path = tmp_path / name
    flat = REVIEWS.with_columns(pl.col("review_body").str.replace("\n", " "))
    if content == "tab":
        path.write_text(flat.write_csv(separator="\t", quote_style="never"))
    elif content == "semicolon":
        path.write_text(flat.write_csv(separator=";"))
    elif content in ("jsonl", "parquet"):
        _write(content, path)
    elif content == "gzip":
        path.write_bytes(gzip.compress(REVIEWS.write_csv().encode()))
    else:
        REVIEWS.write_csv(path)
    snap = ingest(str(path), IngestConfig(format=fmt), tmp_path / "out")  # type: ignore[arg-type]
    assert (snap.rows_read, snap.rows_ok, snap.rows_quarantined) == (3, 3, 0)
    assert pl.read_parquet(snap.path)["text"][0] == "Great\nLove it.<br />Works"


def test_directory_and_glob(tmp_path: Path, reference: str) -> None:
    parts = tmp_path / "parts"
    parts.mkdir()
    REVIEWS.head(2).write_csv(parts / "a.csv")
    REVIEWS.tail(1).with_columns(pl.col("star_rating").cast(pl.Int64)).write_ndjson(
        parts / "b.jsonl"
    )
    (parts / "README.md").write_text("ignored")
    (parts / ".hidden.csv").write_text("ignored")
    by_dir = ingest(str(parts), IngestConfig(), tmp_path / "d")
    by_glob = ingest(str(parts / "*.*l"), IngestConfig(), tmp_path / "g")  # b.jsonl only
    assert (by_dir.rows_read, by_dir.rows_ok, by_dir.digest) == (3, 3, reference)
    assert by_glob.rows_read == 1


def test_fsspec_urls(tmp_path: Path, reference: str) -> None:
    """s3:// and gs:// go through the same fsspec code path as memory:// and file://."""
    with fsspec.open("memory://bucket/reviews/r.csv", "wb") as fh:
        fh.write(REVIEWS.write_csv().encode())
    with fsspec.open("memory://bucket/reviews/r2.csv.gz", "wb") as fh:
        fh.write(gzip.compress(REVIEWS.write_csv().encode()))
    try:
        one = ingest("memory://bucket/reviews/r.csv", IngestConfig(), tmp_path / "m")
        many = ingest("memory://bucket/reviews/*.csv*", IngestConfig(), tmp_path / "g")
        folder = ingest("memory://bucket/reviews", IngestConfig(), tmp_path / "f")
    finally:
        fsspec.filesystem("memory").rm("/bucket", recursive=True)
    assert one.digest == reference
    assert (many.rows_read, many.rows_duplicates) == (6, 3)  # the same reviews twice
    assert folder.digest == many.digest
    REVIEWS.write_csv(tmp_path / "r.csv")
    assert ingest((tmp_path / "r.csv").as_uri(), IngestConfig(), tmp_path / "u").digest == reference
    with pytest.raises(InputError, match="no such file"):
        ingest("memory://bucket/absent.csv", IngestConfig(), tmp_path / "x")


@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "www"
    root.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()


def test_http(tmp_path: Path, reference: str, http_dir: tuple[str, Path]) -> None:
    url, root = http_dir
    (root / "r.csv.gz").write_bytes(gzip.compress(REVIEWS.write_csv().encode()))
    assert ingest(f"{url}/r.csv.gz", IngestConfig(), tmp_path / "h").digest == reference
    with pytest.raises(InputError, match=r"missing.csv: not found \(HTTP 404\)"):
        ingest(f"{url}/missing.csv", IngestConfig(), tmp_path / "h")


def test_amazon_presets_by_header(tmp_path: Path) -> None:
    us = tmp_path / "amazon_reviews_us_Books_v1_00.tsv"
    us.write_text(
        "marketplace\tcustomer_id\treview_id\tproduct_id\tstar_rating\treview_headline\t"
        "review_body\treview_date\n"
        'US\t1\tRA\tB1\t5\tFive Stars\tGreat book. The 5" edition<br />is fine\t2015-08-31\n'
        "US\t2\tRB\tB2\t2\tMeh\tNot for me&#039;\t2015-08-31\n"
    )
    snap = ingest(str(us), IngestConfig(), tmp_path / "us")
    frame = pl.read_parquet(snap.path)
    assert frame.rows() == [
        ("RA", 'Five Stars\nGreat book. The 5" edition<br />is fine', 5, None),
        ("RB", "Meh\nNot for me&#039;", 2, None),
    ]
    multi = tmp_path / "dataset_de_train.jsonl"
    pl.DataFrame(
        {
            "review_id": ["de_1", "ja_1"],
            "product_id": ["p1", "p2"],
            "stars": [1, 5],
            "review_body": ["Schlecht verpackt", "とても良い商品です"],
            "review_title": ["Leider nein", "最高"],
            "language": ["de", "ja"],
        }
    ).write_ndjson(multi)
    snap = ingest(str(multi), IngestConfig(), tmp_path / "multi")
    assert pl.read_parquet(snap.path).rows() == [
        ("de_1", "Leider nein\nSchlecht verpackt", 1, "de"),
        ("ja_1", "最高\nとても良い商品です", 5, "ja"),
    ]
    # explicit columns win over presets; "no rating" applies to a preset too
    snap = ingest(str(us), IngestConfig(rating_column=None), tmp_path / "norating")
    assert pl.read_parquet(snap.path)["rating"].to_list() == [None, None]


def _quoted_tsv_export(n: int) -> tuple[bytes, list[str]]:
    """A TSV as pandas/Excel export it (`to_csv(sep="\\t")`): an unnamed index column, fields with
    a tab, a quote or a line break quoted with quotes doubled, so a review in quotes is
    `\"\"\"…\"\"\"`, and line breaks inside reviews, some `\\r\\n`. Also the reviews, unquoted."""
    bodies = [
        '"Best blender ever"',  # written """Best blender ever"""
        "Two lines:\nfirst\nsecond",
        "Windows line breaks\r\ninside\r\nthis one",
        'The 5" jar, "really" big',
        "Tab\tinside",
        "Plain review, with a comma",
        '"',
        "Ends with a line break\n",
    ]
    lines, texts = ["\treview_id\tstar_rating\treview\n"], []
    for i in range(n):
        body = bodies[i % len(bodies)] + f" #{i}"
        if i % 3 == 0:
            body = bodies[i % len(bodies)]  # some exactly as above (a field ending in a quote)
        quoted = any(c in body for c in '\t\n\r"')
        field = '"' + body.replace('"', '""') + '"' if quoted else body
        lines.append(f"{i}\tR{i}\t{i % 5 + 1}\t{field}\n")
        texts.append(body)
    return "".join(lines).encode(), texts


@pytest.mark.parametrize("chunk_bytes", [1 << 20, 4096, 7], ids=["one-chunk", "4k", "tiny"])
def test_quoted_tsv_reads_like_pandas(tmp_path: Path, chunk_bytes: int) -> None:
    data, texts = _quoted_tsv_export(240)
    path = tmp_path / "reviews.tsv"
    path.write_bytes(data)
    expected = pd.read_csv(path, sep="\t")
    assert len(expected) == 240 and expected["review"].tolist() == texts
    cfg = IngestConfig(text_columns=["review"], rating_column=None)
    snap = ingest(str(path), cfg, tmp_path / "out", chunk_bytes=chunk_bytes)
    assert (snap.rows_read, snap.rows_ok, snap.rows_quarantined, snap.rows_duplicates) == (
        240, 240, 0, 0,
    )  # fmt: skip
    assert snap.quoting == {str(path): "csv"}
    frame = pl.read_parquet(snap.path)
    assert frame["review_id"].to_list() == expected["review_id"].tolist()
    assert frame["text"].to_list() == expected["review"].tolist()
    # forced off, the same file is read line by line: what the issue reported
    unquoted = ingest(str(path), cfg.model_copy(update={"quoting": "none"}), tmp_path / "none")
    assert unquoted.rows_read > 240 and unquoted.quarantine_reasons["ragged"] > 0


def test_quoted_tsv_beyond_the_detection_sample(tmp_path: Path) -> None:
    """Over 1 MB: auto decides from a sample that ends inside a record, perhaps inside quotes;
    the chunks are cut outside quotes all the way."""
    data, texts = _quoted_tsv_export(30_000)
    assert len(data) > 1 << 20
    path = tmp_path / "reviews.tsv"
    path.write_bytes(data)
    cfg = IngestConfig(text_columns=["review"], rating_column=None)
    snap = ingest(str(path), cfg, tmp_path / "out", chunk_bytes=1 << 18)
    assert (snap.rows_read, snap.rows_ok, snap.rows_quarantined) == (30_000, 30_000, 0)
    assert pl.read_parquet(snap.path)["text"].to_list() == texts
    text = data.decode()  # a sample cut anywhere: in quotes, between "\r" and "\n", …
    assert {detect_quoting(text[:cut], "\t", complete=False) for cut in range(400, 2400)} == {"csv"}


def test_amazon_tsv_with_stray_quotes_stays_unquoted(tmp_path: Path) -> None:
    """The Amazon Customer Reviews TSVs are not quoted: a review may start with a stray quote
    that never closes, or quote a word and go on; every line is one review."""
    header = "marketplace\tcustomer_id\treview_id\tproduct_id\tstar_rating\treview_headline\t"
    header += "review_body\treview_date\n"
    bodies = [
        '"Great" product, works',
        '"Best purchase of the year',
        'The 5" screen is small',
        '"Perfect"',
        "Plain, no quotes",
        'He said ""wow""',
    ]
    rows = [
        f"US\t{i}\tR{i}\tB{i % 7}\t{i % 5 + 1}\tTitle {i}\t{body} {i}\t2015-08-31\n"
        for i, body in ((i, bodies[i % len(bodies)]) for i in range(300))
    ]
    path = tmp_path / "amazon_reviews_us_Electronics_v1_00.tsv"
    path.write_text(header + "".join(rows))
    snap = ingest(str(path), IngestConfig(), tmp_path / "out", chunk_bytes=4096)
    assert (snap.rows_read, snap.rows_ok, snap.rows_quarantined, snap.rows_duplicates) == (
        300, 300, 0, 0,
    )  # fmt: skip
    assert snap.quoting == {str(path): "none"}
    expected = pd.read_csv(path, sep="\t", quoting=csv.QUOTE_NONE)
    frame = pl.read_parquet(snap.path)
    assert frame["text"].to_list() == [
        f"{title}\n{body}"
        for title, body in zip(expected["review_headline"], expected["review_body"], strict=True)
    ]
    assert frame["rating"].to_list() == expected["star_rating"].tolist()


def _json_array() -> bytes:
    rows = REVIEWS.with_columns(pl.col("star_rating").cast(pl.Int64)).to_dicts()
    return json.dumps(rows, indent=2, ensure_ascii=False).encode()


# name → the same reviews as an export of that kind
EXPORTS: dict[str, Callable[[], bytes]] = {
    "semicolon.csv": lambda: REVIEWS.write_csv(separator=";").encode(),
    "pipe.csv": lambda: REVIEWS.write_csv(separator="|").encode(),
    "pipe.txt": lambda: REVIEWS.write_csv(separator="|").encode(),  # sniffed
    # Excel's "Unicode text": UTF-16 LE with a BOM, tab separated, CRLF, quoted where needed
    "excel-unicode.txt": lambda: REVIEWS.write_csv(separator="\t", line_terminator="\r\n").encode(
        "utf-16"
    ),
    "utf16-be.csv": lambda: codecs.BOM_UTF16_BE + REVIEWS.write_csv().encode("utf-16-be"),
    "old-mac.csv": lambda: REVIEWS.write_csv().replace("\n", "\r").encode(),  # \r-only
    "array.json": _json_array,
    "array-no-extension": _json_array,
    "array.json.gz": lambda: gzip.compress(_json_array()),
    "one.zip": lambda: _zip_bytes({"export/reviews.csv": REVIEWS.write_csv().encode()}),
    "parts.zip": lambda: _zip_bytes(
        {
            "a.csv": REVIEWS.head(2).write_csv().encode(),
            "b.json": REVIEWS.tail(1)
            .with_columns(pl.col("star_rating").cast(pl.Int64))
            .write_json()
            .encode(),
            "notes.md": b"not reviews",
            "__MACOSX/._a.csv": b"\x00\x05\x16\x07",
        }
    ),
}


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.mark.parametrize("chunk_bytes", [1 << 20, 7], ids=["one-chunk", "tiny"])
@pytest.mark.parametrize("name", list(EXPORTS))
def test_other_exports_give_the_same_snapshot(
    tmp_path: Path, reference: str, name: str, chunk_bytes: int
) -> None:
    path = tmp_path / name
    path.write_bytes(EXPORTS[name]())
    snap = ingest(str(path), IngestConfig(), tmp_path / "out", chunk_bytes=chunk_bytes)
    assert (snap.rows_read, snap.rows_ok, snap.rows_quarantined) == (3, 3, 0)
    assert snap.digest == reference


def test_zip_in_a_directory_and_an_object_store(tmp_path: Path, reference: str) -> None:
    folder = tmp_path / "dumps"
    folder.mkdir()
    (folder / "reviews.zip").write_bytes(EXPORTS["parts.zip"]())
    by_dir = ingest(str(folder), IngestConfig(), tmp_path / "d")
    assert (by_dir.rows_read, by_dir.digest) == (3, reference)
    with fsspec.open("memory://bucket/zips/reviews.zip", "wb") as fh:
        fh.write(EXPORTS["one.zip"]())
    try:
        remote = ingest("memory://bucket/zips/*.zip", IngestConfig(), tmp_path / "m")
    finally:
        fsspec.filesystem("memory").rm("/bucket", recursive=True)
    assert remote.digest == reference


@pytest.mark.parametrize(
    ("sample", "separator", "complete", "quoting"),
    [
        ('a,b\n1,"x, y"\n2,"z"\n', ",", True, "csv"),
        ('a\tb\n1\t"x\ny"\n', "\t", True, "csv"),
        ('a\tb\n1\t"x"y\n', "\t", True, "none"),  # a quote closed, then more text
        ('a\tb\n1\tthe 5" one\n', "\t", True, "none"),  # a quote inside an unquoted field
        ('a\tb\n1\t"never closed\n2\tz\n', "\t", True, "none"),
        ('a\tb\n1\t"x"\n2\t"cut, and the sample ends in', "\t", False, "csv"),
        ('a,b\n"1,2"\n"3,4"\n', ",", True, "none"),  # fewer records fit the header if quoted
        ("a,b\n1,x\n", ",", True, "csv"),  # no quote at all: the convention
        ("a\tb\n1\tx\n", "\t", True, "none"),
    ],
)
def test_detect_quoting(sample: str, separator: str, complete: bool, quoting: str) -> None:
    assert detect_quoting(sample, separator, complete) == quoting
