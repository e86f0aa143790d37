# ruff: noqa: E501  (the case tables read best one case a line)
"""The bad-input matrix: every malformed input either is refused with one clear line
(InputError → exit 2 in the CLI) or ends up with exact counts, and rows.read == ok +
quarantined + duplicates always. Each case also runs with tiny read chunks, so batching never
changes the outcome."""

import gzip
import io
import json
import zipfile
from pathlib import Path

import polars as pl
import pytest

from tasks.config import IngestConfig
from tasks.ingest.snapshot import ingest
from tasks.records import InputError

HEADER = "review_id,star_rating,review_title,review_body,language\n"
OK = "R0,5,Good,Works well,en\n"


def _text(body: str) -> bytes:
    return (HEADER + OK + body).encode()


# name → (file name, bytes, config, expected (read, ok, quarantined, duplicates), reasons)
ROW_CASES: dict[str, tuple[str, bytes, IngestConfig, tuple[int, int, int, int], dict[str, int]]] = {
    "empty text": ("r.csv", _text("R1,5,,   ,en\n"), IngestConfig(), (2, 1, 1, 0), {"empty_text": 1}),
    "html-only text": (
        "r.csv", _text("R1,5,<b></b>,<br /><br/>,en\n"), IngestConfig(), (2, 1, 1, 0),
        {"empty_text": 1},
    ),
    "latin-1 bytes": (
        "r.csv", HEADER.encode() + OK.encode() + b"R1,5,t,caf\xe9 cr\xe8me,en\n",
        IngestConfig(), (2, 1, 1, 0), {"bad_encoding": 1},
    ),
    "short row": ("r.csv", _text("R1,5,only three\n"), IngestConfig(), (2, 1, 1, 0), {"ragged": 1}),
    "long row": ("r.csv", _text("R1,5,t,b,en,extra\n"), IngestConfig(), (2, 1, 1, 0), {"ragged": 1}),
    "non-numeric rating": (
        "r.csv", _text("R1,five,t,b,en\n"), IngestConfig(), (2, 1, 1, 0), {"bad_rating": 1}
    ),
    "out-of-range rating": (
        "r.csv", _text("R1,0,t,b,en\nR2,6,t,b,en\n"), IngestConfig(), (3, 1, 2, 0),
        {"bad_rating": 2},
    ),
    "fractional rating": (
        "r.csv", _text("R1,4.5,t,b,en\n"), IngestConfig(), (2, 1, 1, 0), {"bad_rating": 1}
    ),
    "configured rating range": (
        "r.csv", _text("R1,9,t,b,en\nR2,11,t,b,en\n"), IngestConfig(rating_max=10),
        (3, 2, 1, 0), {"bad_rating": 1},
    ),
    "NUL byte": ("r.csv", _text("R1,5,t,a\x00b,en\n"), IngestConfig(), (2, 1, 1, 0), {"nul_byte": 1}),
    "over-long text": (
        "r.csv", _text("R1,5,t," + "x" * 100 + ",en\n"), IngestConfig(max_text_chars=50),
        (2, 1, 1, 0), {"too_long": 1},
    ),
    "duplicate id": ("r.csv", _text("R0,3,t,other text,en\n"), IngestConfig(), (2, 1, 0, 1), {}),
    "duplicate text without id": (
        "r.csv", b"stars,title,body\n5,a,same\n4,a,same\n4,b,other\n",
        IngestConfig(text_columns=["title", "body"], rating_column="stars"), (3, 2, 0, 1), {},
    ),
    "BOM": ("r.csv", b"\xef\xbb\xbf" + _text("R1,4,t,b,en\n"), IngestConfig(), (2, 2, 0, 0), {}),
    "CRLF": ("r.csv", _text("R1,4,t,b,en\n").replace(b"\n", b"\r\n"), IngestConfig(), (2, 2, 0, 0), {}),
    "embedded newlines and delimiters": (
        "r.csv", _text('R1,4,"a, b","line one\nline two, ""quoted""",en\n'), IngestConfig(),
        (2, 2, 0, 0), {},
    ),
    "blank lines": ("r.csv", _text("\n\nR1,4,t,b,en\n\n"), IngestConfig(), (2, 2, 0, 0), {}),
    "stray quotes in TSV": (
        "r.tsv", b'review_id\tstar_rating\treview_title\treview_body\nR1\t5\tThe 5" one\tsays "hi\n',
        IngestConfig(), (1, 1, 0, 0), {},
    ),
    "malformed JSON line": (
        "r.jsonl",
        b'{"review_id": "R0", "star_rating": 5, "review_title": "a", "review_body": "b"}\n'
        b'{"review_id": "R1", "star_rating": 5, "review_title": "a", "review_body": \n'
        b'[1, 2]\n'
        b'{"review_id": "R2", "star_rating": "4", "review_title": "c", "review_body": "d"}\n',
        IngestConfig(), (4, 2, 2, 0), {"bad_json": 2},
    ),
    "unnamed index column": (
        "r.csv", b",review_id,star_rating,review_title,review_body\n0,R1,5,a,b\n1,R2,4,c,d\n",
        IngestConfig(), (2, 2, 0, 0), {},
    ),
    "unterminated quote (auto: read unquoted)": (
        "r.csv", _text('R1,5,t,"never closed,en\nR2,4,t,b,en\n'), IngestConfig(), (3, 3, 0, 0), {},
    ),
    "quoted TSV: line breaks, CRLF and doubled quotes in reviews": (
        "r.tsv", b'\treview_id\tstar_rating\treview\n0\tR0\t5\t"""Great"""\n1\tR1\t4\t"a\r\nb"\r\n'
        b'2\tR2\t4\t"x\ty\n""z"""\n3\tR3\t9\t"two\nlines, bad rating"\n4\tR4\t3\n',
        IngestConfig(text_columns=["review"]), (5, 3, 2, 0), {"bad_rating": 1, "ragged": 1},
    ),
    "default rating column absent: no ratings": (
        "r.csv", b"review_title,review_body\na,b\nc,d\n", IngestConfig(), (2, 2, 0, 0), {},
    ),
    "UTF-16 with a short row": (
        "r.txt", "review_title\treview_body\r\na\tb\r\nonly one\r\n".encode("utf-16"),
        IngestConfig(), (2, 1, 1, 0), {"ragged": 1},
    ),
    "\\r-only line ends with a blank line": (
        "r.csv", _text("R1,4,t,\"x\ry\",en\n\nR2,4,t,b,en\n").replace(b"\n", b"\r"), IngestConfig(),
        (3, 3, 0, 0), {},
    ),
    "JSON array with non-object elements": (
        "r.json", b'[{"review_title": "a", "review_body": "b"},\n [1, 2], 3,\n'
        b' {"review_title": "c", "review_body": "d\\n\\"e\\""}]', IngestConfig(), (4, 2, 2, 0),
        {"bad_json": 2},
    ),
    "a few broken rows among good ones": (
        "r.csv", _text("".join(f"R{i},{i % 5 + 1},t,body {i},en\n" for i in range(1, 50)) + "X,9,t,b,en\n"),
        IngestConfig(), (51, 50, 1, 0), {"bad_rating": 1},
    ),
}  # fmt: skip


@pytest.mark.parametrize("chunk_bytes", [1 << 20, 7], ids=["one-chunk", "tiny-chunks"])
@pytest.mark.parametrize("case", list(ROW_CASES))
def test_row_level_case(tmp_path: Path, case: str, chunk_bytes: int) -> None:
    name, data, cfg, counts, reasons = ROW_CASES[case]
    (tmp_path / name).write_bytes(data)
    snap = ingest(str(tmp_path / name), cfg, tmp_path / "out", chunk_bytes=chunk_bytes)
    assert (snap.rows_read, snap.rows_ok, snap.rows_quarantined, snap.rows_duplicates) == counts
    assert snap.quarantine_reasons == reasons
    assert snap.rows_read == snap.rows_ok + snap.rows_quarantined + snap.rows_duplicates
    quarantine = pl.read_parquet(snap.quarantine_path)
    assert quarantine.height == snap.rows_quarantined
    assert quarantine["raw"].null_count() == 0


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _truncated_gzip() -> bytes:
    data = gzip.compress(_text("".join(f"R{i},5,t,body {i},en\n" for i in range(2000))))
    return data[: len(data) // 2]


# name → (file name or None for "do not create", bytes, config, what the message says)
REFUSED: dict[str, tuple[str | None, bytes, IngestConfig, list[str]]] = {
    "missing file": (None, b"", IngestConfig(), ["no such file"]),
    "empty file": ("r.csv", b"", IngestConfig(), ["empty file"]),
    "header only": ("r.csv", HEADER.encode(), IngestConfig(), ["no usable review in 0 row(s)"]),
    "every row bad": (
        "r.csv", (HEADER + "R1,x,t,b,en\nR2,5,,,en\n").encode(), IngestConfig(),
        ["no usable review in 2 row(s)", "'bad_rating': 1", "'empty_text': 1"],
    ),
    "binary garbage": ("r.csv", bytes(range(256)) * 8, IngestConfig(), ["binary data"]),
    "header not UTF-8": (
        "r.csv", b"review_id,star_rating,review_t\xeftle,review_body\nR1,5,a,b\n", IngestConfig(),
        ["header is not UTF-8"],
    ),
    "truncated gzip": ("r.csv.gz", _truncated_gzip(), IngestConfig(), ["truncated", "download"]),
    "header without the needed columns": (
        "r.csv", b"id,body,stars\n1,hello,5\n", IngestConfig(),
        ["found ['id', 'body', 'stars']", "expected ['review_title', 'review_body']",
         "amazon-multilingual", "--text-column"],
    ),
    "duplicate header names": (
        "r.csv", (HEADER.strip() + ",review_body\nR1,5,t,b,en,b2\n").encode(), IngestConfig(),
        ["'review_body' appears more than once"],
    ),
    "unterminated quote, quoting forced": (
        "r.csv", _text('R1,5,t,"never closed,en\nR2,4,t,b,en\n'), IngestConfig(quoting="csv"),
        ["malformed CSV quoting"],
    ),
    "not JSON Lines": ("r.jsonl", b"this is not json\n", IngestConfig(), ["not a JSON object"]),
    "truncated JSON array": (
        "r.json", b'[{"review_title": "a", "review_body": "b"}, {"review_title": "c", ', IngestConfig(),
        ["not a valid JSON array after its element 1"],
    ),
    "named rating column absent": (
        "r.csv", b"review_title,review_body\na,b\n", IngestConfig(rating_column="star_rating"),
        ["expected ['review_title', 'review_body', 'star_rating']", "--rating-column"],
    ),
    "zip without review files": ("r.zip", _zip({"notes.md": b"hi"}), IngestConfig(), ["no review file in this zip"]),
    "not a zip": ("r.zip", b"PK but not really", IngestConfig(), ["not a readable zip archive"]),
    "UTF-16 BOM, then not UTF-16": (
        "r.txt", b"\xff\xfea\x00,\x00b\x00\n\x00\x00\xdc", IngestConfig(), ["not UTF-16", "UTF-8"],
    ),
    "not Parquet": ("r.parquet", b"PAR1 but not really", IngestConfig(), ["not a readable Parquet"]),
    "empty JSON Lines": ("r.jsonl", b"\n\n", IngestConfig(), ["empty file"]),
}  # fmt: skip


@pytest.mark.parametrize("case", list(REFUSED))
def test_refused_with_one_line(tmp_path: Path, case: str) -> None:
    name, data, cfg, needles = REFUSED[case]
    path = tmp_path / (name or "absent.csv")
    if name is not None:
        path.write_bytes(data)
    with pytest.raises(InputError) as err:
        ingest(str(path), cfg, tmp_path / "out", chunk_bytes=4096)
    message = str(err.value)
    assert "\n" not in message
    assert str(path) in message
    for needle in needles:
        assert needle in message
    leftovers = list((tmp_path / "out").iterdir()) if (tmp_path / "out").exists() else []
    assert leftovers == []  # nothing half-written


def test_empty_directory_and_unmatched_glob(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.md").write_text("not reviews")
    with pytest.raises(InputError, match="empty directory: no review file"):
        ingest(str(tmp_path / "empty"), IngestConfig(), tmp_path / "out")
    with pytest.raises(InputError, match="no file matches"):
        ingest(str(tmp_path / "*.csv"), IngestConfig(), tmp_path / "out")


def test_unknown_url_scheme(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot open"):
        ingest("nosuchscheme://bucket/r.csv", IngestConfig(), tmp_path)


def test_quarantine_keeps_the_original_content(tmp_path: Path) -> None:
    (tmp_path / "r.jsonl").write_text(
        '{"review_id": "R0", "star_rating": 5, "review_title": "a", "review_body": "b"}\n'
        '{"review_id": "R1", oops}\n'
    )
    snap = ingest(str(tmp_path / "r.jsonl"), IngestConfig(), tmp_path / "out")
    row = pl.read_parquet(snap.quarantine_path).row(0, named=True)
    assert row == {
        "file": str(tmp_path / "r.jsonl"), "row": 2, "reason": "bad_json",
        "raw": '{"review_id": "R1", oops}',
    }  # fmt: skip
    # CSV/TSV: the whole record as read, every surplus field and quoted line break kept
    (tmp_path / "r.csv").write_text(
        HEADER + 'R1,5,t,b,en,surplus,"more, ""and"" more"\r\n' + OK
        + "R3,5,Café,crème brûlée 😀,en\n" + 'R2,5,t,"zwei\r\nZeilen, ü"\n',
        encoding="utf-8",
    )  # fmt: skip
    snap = ingest(str(tmp_path / "r.csv"), IngestConfig(), tmp_path / "out")
    assert pl.read_parquet(snap.quarantine_path).select("row", "raw").rows() == [
        (1, 'R1,5,t,b,en,surplus,"more, ""and"" more"'), (4, 'R2,5,t,"zwei\r\nZeilen, ü"'),
    ]  # fmt: skip
    # Parquet: its fields as JSON
    pl.DataFrame({"review_title": ["t", ""], "review_body": ["b", " "]}).write_parquet(
        tmp_path / "r.pq"
    )
    snap = ingest(str(tmp_path / "r.pq"), IngestConfig(), tmp_path / "out")
    raw = pl.read_parquet(snap.quarantine_path)["raw"].item()
    assert json.loads(raw) == {"review_title": "", "review_body": " ", "_extra": None}
