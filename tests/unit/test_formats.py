"""Every input format and location gives the same snapshot for the same reviews."""

import gzip
import http.server
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import fsspec
import polars as pl
import pytest

from tasks.config import IngestConfig
from tasks.ingest import ingest
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
    with pytest.raises(InputError, match="no such file"):
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
