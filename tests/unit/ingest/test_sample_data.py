import csv
import re
from collections import Counter
from pathlib import Path

from tasks.ingest.sample_data import COLUMNS, write_sample_reviews


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_layout_and_determinism(tmp_path: Path) -> None:
    a = write_sample_reviews(tmp_path / "a.csv", rows=300, seed=7)
    b = write_sample_reviews(tmp_path / "b.csv", rows=300, seed=7)
    c = write_sample_reviews(tmp_path / "c.csv", rows=300, seed=8)
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()
    rows = _rows(a)
    assert tuple(rows[0]) == COLUMNS
    assert len(rows) == 300
    assert {r["language"] for r in rows} == {"en"}
    assert {r["star_rating"] for r in rows} <= {"1", "2", "3", "4", "5"}
    assert len({r["review_id"] for r in rows}) == 300
    bodies = " ".join(r["review_body"] for r in rows)
    assert "<br />" in bodies
    assert "&#39;" in bodies
    assert list(tmp_path.iterdir()) and not list(tmp_path.glob(".*"))  # no temp files left


def test_statistics_like_real_reviews(tmp_path: Path) -> None:
    """Thousands of word types with a Zipfian head and a long tail of rare ones, and lengths
    from one line to many: what made the old grammar too easy was missing all of these."""
    rows = _rows(write_sample_reviews(tmp_path / "r.csv", rows=2000, seed=1))
    reviews = [re.findall(r"[a-z]+", r["review_body"].lower()) for r in rows]
    counts = Counter(word for words in reviews for word in words)
    assert len(counts) > 2500
    rare = sum(1 for n in counts.values() if n <= 2)
    assert rare > 0.3 * len(counts)
    top = sum(n for _, n in counts.most_common(20))
    assert 0.25 < top / counts.total() < 0.6
    lengths = sorted(len(words) for words in reviews)
    assert (
        lengths[len(lengths) // 10] < 15
        and lengths[-len(lengths) // 20] > 4 * lengths[len(lengths) // 10]
    )


def test_the_product_comes_back(tmp_path: Path) -> None:
    """The product of the first sentence is named again later in most long reviews (elsewhere
    other products of its category): context a
    bigram cannot use."""
    rows = _rows(write_sample_reviews(tmp_path / "r.csv", rows=300, seed=1))
    long = [r["review_body"] for r in rows if r["review_body"].count(".") >= 5]
    again = 0
    for body in long:
        product = re.match(r"\w+ bought this (\w+)", body.lower())
        again += bool(product) and body.lower().count(product.group(1)) >= 2
    assert len(long) > 30 and again > 0.7 * len(long)
