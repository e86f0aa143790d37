import gzip
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from tasks.config import IngestConfig
from tasks.ingest.snapshot import _Seen, ingest
from tasks.ingest.sources import read_ahead
from tasks.records import InputError

HEADER = "review_id,star_rating,review_title,review_body,language\n"
ROWS = [
    'R1,5,Great,"Love it, really.<br />Works.",en',  # 1 ok
    "R2,5.0,Fine,Solid blender,en",  # 2 ok ("5.0" is a rating)
    "R3,six,Bad,Body text,en",  # 3 bad_rating (not a number)
    "R4,9,Bad,Body text,en",  # 4 bad_rating (out of range)
    "R5,4,,<br /> <p></p>,en",  # 5 empty_text
    "R6,4,Short,Too few fields",  # 6 ragged (4 fields)
    "R7,4,Long,Too,many,en",  # 7 ragged (6 fields)
    "R1,3,Again,Same id as row one,en",  # 8 duplicate of row 1
    "R8,4,Nul,Has a \x00 byte,en",  # 9 nul_byte
    ",2,Title,No id here,en",  # 10 ok, id from the text
    ",2,Title,No id here,en",  # 11 duplicate text of row 10
    'R9,1,Multi,"line one\nline two, with comma",',  # 12 ok, quoted newline, no language
    "R10,2.5,Half,Half a star,en",  # 13 bad_rating (not a whole star)
]


def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_counts_and_quarantine(tmp_path: Path) -> None:
    src = write(tmp_path / "reviews.csv", HEADER + "\n".join(ROWS) + "\n")
    snap = ingest(src, IngestConfig(), tmp_path / "out")
    assert (snap.rows_read, snap.rows_ok, snap.rows_quarantined, snap.rows_duplicates) == (
        13, 4, 7, 2,
    )  # fmt: skip
    assert snap.quarantine_reasons == {
        "bad_rating": 3, "empty_text": 1, "ragged": 2, "nul_byte": 1,
    }  # fmt: skip
    assert snap.rows_read == snap.rows_ok + snap.rows_quarantined + snap.rows_duplicates

    frame = pl.read_parquet(snap.path)
    assert frame.schema == pl.Schema(
        {"review_id": pl.String, "text": pl.String, "rating": pl.Int8, "language": pl.String}
    )
    assert frame["review_id"].to_list()[:2] == ["R1", "R2"]
    assert frame["text"][0] == "Great\nLove it, really.<br />Works."
    assert frame["rating"].to_list() == [5, 5, 2, 1]
    assert frame["language"].to_list() == ["en", "en", "en", None]
    assert len(frame["review_id"][2]) == 16  # sha1 prefix of the text
    assert frame["text"][3] == "Multi\nline one\nline two, with comma"

    quarantine = pl.read_parquet(snap.quarantine_path)
    assert quarantine.schema == pl.Schema(
        {"file": pl.String, "row": pl.Int64, "reason": pl.String, "raw": pl.String}
    )
    assert set(quarantine["file"]) == {src}
    assert dict(quarantine.select("row", "reason").rows()) == {
        3: "bad_rating", 4: "bad_rating", 5: "empty_text", 6: "ragged", 7: "ragged",
        9: "nul_byte", 13: "bad_rating",
    }  # fmt: skip
    raw = dict(quarantine.select("row", "raw").rows())
    assert raw[3] == "R3,six,Bad,Body text,en"  # the whole record, as read
    assert raw[7] == "R7,4,Long,Too,many,en"


def test_digest_is_content(tmp_path: Path) -> None:
    text = HEADER + "\n".join(ROWS) + "\n"
    a = ingest(write(tmp_path / "a.csv", text), IngestConfig(), tmp_path / "a")
    b = ingest(write(tmp_path / "b.csv", text), IngestConfig(), tmp_path / "b")
    c = ingest(
        write(tmp_path / "c.csv", text + "R77,4,New,Another one,en\n"), IngestConfig(), tmp_path
    )
    assert a.digest == b.digest != c.digest
    assert a.path.name == b.path.name == f"snapshot-{a.digest}.parquet"
    assert a.path.read_bytes() == b.path.read_bytes()
    assert not [p for p in (tmp_path / "a").iterdir() if p.name.startswith(".")]


def test_gzip_tsv_and_custom_columns(tmp_path: Path) -> None:
    tsv = 'id\tstars\tcomment\n1\t4\tHe said "wow" twice\n2\t0\tZero stars\n3\t5\t\n'
    path = tmp_path / "reviews.tsv.gz"
    path.write_bytes(gzip.compress(tsv.encode()))
    cfg = IngestConfig(text_columns=["comment"], rating_column="stars", id_column="id")
    snap = ingest(str(path), cfg, tmp_path / "out")
    assert (snap.rows_read, snap.rows_ok) == (3, 1)
    assert snap.quarantine_reasons == {"bad_rating": 1, "empty_text": 1}
    frame = pl.read_parquet(snap.path)
    assert frame.row(0) == ("1", 'He said "wow" twice', 4, None)


def test_no_rating_column(tmp_path: Path) -> None:
    src = write(tmp_path / "r.csv", "text\nfirst review\nsecond review\nfirst review\n")
    snap = ingest(src, IngestConfig(text_columns=["text"], rating_column=None), tmp_path)
    assert (snap.rows_read, snap.rows_ok, snap.rows_duplicates) == (3, 2, 1)
    assert pl.read_parquet(snap.path)["rating"].to_list() == [None, None]


def test_missing_columns_message(tmp_path: Path) -> None:
    src = write(tmp_path / "r.csv", "id,body,stars\n1,hello,5\n")
    with pytest.raises(InputError) as err:
        ingest(src, IngestConfig(), tmp_path)
    message = str(err.value)
    assert "\n" not in message
    assert "r.csv" in message
    assert "['id', 'body', 'stars']" in message  # found
    assert "expected ['review_title', 'review_body']" in message  # the rating is optional
    assert "--text-column" in message and "--rating-column" in message


def test_stray_quote_reads_unquoted_unless_quoting_is_forced(tmp_path: Path) -> None:
    src = write(tmp_path / "r.csv", HEADER + 'R1,5,t,the 5" screen,en\nR2,4,t,ok,en\n')
    snap = ingest(src, IngestConfig(), tmp_path / "auto")
    assert (snap.rows_read, snap.rows_ok, snap.quoting) == (2, 2, {src: "none"})
    assert pl.read_parquet(snap.path)["text"][0] == 't\nthe 5" screen'
    with pytest.raises(InputError, match="malformed CSV quoting") as err:
        ingest(src, IngestConfig(quoting="csv"), tmp_path / "csv")
    assert "\n" not in str(err.value)


def test_read_ahead_keeps_order_passes_errors_and_stops_with_the_consumer() -> None:
    assert list(read_ahead(iter(range(100)), depth=3)) == list(range(100))

    def failing() -> Iterator[int]:
        yield 1
        raise InputError("r.csv: broken")

    with pytest.raises(InputError, match="broken"):
        list(read_ahead(failing()))

    produced: list[int] = []

    def counting() -> Iterator[int]:
        for i in range(1000):
            produced.append(i)
            yield i

    for item in read_ahead(counting(), depth=2):
        if item == 5:
            break
    assert len(produced) <= 5 + 1 + 2 + 1  # taken, the one in hand, the queue, one being put


def test_seen_ids_survive_a_hash_collision() -> None:
    seen = _Seen()
    first = seen.fresh(pl.DataFrame({"review_id": ["a", "b", "a"], "x": [1, 2, 3]}))
    assert first["x"].to_list() == [1, 2]
    # "c" collides with an id seen before: it is still new; "a" is not, "d" only once.
    collision = pl.Series(["c"]).hash(seed=0).to_numpy()
    seen.hashes = np.sort(np.concatenate([seen.hashes, collision]))
    second = seen.fresh(pl.DataFrame({"review_id": ["c", "a", "d", "d"], "x": [4, 5, 6, 7]}))
    assert second["x"].to_list() == [4, 6]
    assert seen.fresh(pl.DataFrame({"review_id": ["d", "e"], "x": [8, 9]}))["x"].to_list() == [9]


def test_default_rating_column_absent_is_said_in_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    src = write(tmp_path / "r.csv", "review_title,review_body\na,b\nc,d\n")
    with caplog.at_level(logging.INFO, logger="tasks.ingest.snapshot"):
        snap = ingest(src, IngestConfig(), tmp_path / "out")
    assert pl.read_parquet(snap.path)["rating"].to_list() == [None, None]
    said = [r.getMessage() for r in caplog.records if "no rating column" in r.getMessage()]
    assert said == [f"{src}: no rating column ('star_rating', the default, or a known layout's):"
                    " read without ratings"]  # fmt: skip
    with pytest.raises(InputError, match="'star_rating'"):
        ingest(src, IngestConfig(rating_column="star_rating"), tmp_path / "named")
