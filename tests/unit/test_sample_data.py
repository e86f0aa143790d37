import csv
from pathlib import Path

from tasks.sample_data import COLUMNS, write_sample_reviews


def test_layout_and_determinism(tmp_path: Path) -> None:
    a = write_sample_reviews(tmp_path / "a.csv", rows=300, seed=7)
    b = write_sample_reviews(tmp_path / "b.csv", rows=300, seed=7)
    c = write_sample_reviews(tmp_path / "c.csv", rows=300, seed=8)
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()
    with a.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == COLUMNS
    assert len(rows) == 300
    assert {r["language"] for r in rows} == {"en"}
    assert {r["star_rating"] for r in rows} <= {"1", "2", "3", "4", "5"}
    assert len({r["review_id"] for r in rows}) == 300
    bodies = " ".join(r["review_body"] for r in rows)
    assert "<br />" in bodies
    assert "&#39;" in bodies
    assert list(tmp_path.iterdir()) and not list(tmp_path.glob(".*"))  # no temp files left


def test_context_decides_the_noun(tmp_path: Path) -> None:
    """The product named in the first sentence comes back later: a bigram cannot know which."""
    path = write_sample_reviews(tmp_path / "r.csv", rows=200, seed=1)
    with path.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            first = row["review_body"].split(".")[0]
            product = first.removeprefix("I bought this ").split(" for my")[0].split(" as a")[0]
            assert f"The {product} is " in row["review_body"]
            words = len(row["review_body"].split()) + len(row["review_title"].split())
            assert 15 <= words <= 120
