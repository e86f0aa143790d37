"""What the evaluate stage hands the gate: slices, prompts, and the per-review file round trip."""

from pathlib import Path

import numpy as np
import polars as pl

from tasks.evaluate.comparison import (
    PairedScores,
    draw_prompts,
    read_comparison,
    slice_labels,
    write_comparison,
)


def _test_split(path: Path, reviews: int, rating: bool = True) -> Path:
    frame = pl.DataFrame(
        {
            "review_id": [f"R{i}" for i in range(reviews)],
            "language": [None if i == 0 else ("en" if i % 2 else "de") for i in range(reviews)],
            "text": [f"<b>Review</b> number {i} says a few words" for i in range(reviews)],
        }
    )
    if rating:
        frame = frame.with_columns(rating=pl.Series([None, *range(1, reviews)], dtype=pl.Int8))
    frame.write_parquet(path)
    return path


def test_prompts_are_drawn_by_review_id_hash_and_stay_put(tmp_path: Path) -> None:
    few = draw_prompts(_test_split(tmp_path / "few.parquet", 20), count=3, words=4)
    more = draw_prompts(_test_split(tmp_path / "more.parquet", 40), count=40, words=4)

    assert len(few) == 3 and len(set(few)) == 3
    assert all(p.startswith("review number ") and len(p.split()) == 4 for p in few)
    # Adding reviews only inserts prompts among the old ones; it never reorders them.
    assert [p for p in more if p in few] == few
    assert draw_prompts(tmp_path / "few.parquet", count=3, words=4) == few
    # Reviews no longer than the prompt give no prompt.
    assert draw_prompts(tmp_path / "few.parquet", count=3, words=8) == []


def test_slices_by_language_and_rating_when_present(tmp_path: Path) -> None:
    labels = slice_labels(_test_split(tmp_path / "test.parquet", 4))
    assert labels["language"].tolist() == ["unknown", "en", "de", "en"]
    assert labels["rating"].tolist() == ["none", "1", "2", "3"]

    without = slice_labels(_test_split(tmp_path / "unrated.parquet", 4, rating=False))
    assert set(without) == {"language"}


def test_comparison_file_round_trip(tmp_path: Path) -> None:
    scores = PairedScores(np.array([1.0, 2.0]), np.array([1, 2]), np.array([3.0, 4.0]),
                          np.array([1, 2]))  # fmt: skip
    labels = {"language": np.array(["en", "de"])}

    back, back_labels = read_comparison(write_comparison(tmp_path / "c.parquet", scores, labels))

    assert all((a == b).all() for a, b in zip(back.arrays(), scores.arrays(), strict=True))
    assert back_labels["language"].tolist() == ["en", "de"]
