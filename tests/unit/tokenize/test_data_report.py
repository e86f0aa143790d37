import json
from pathlib import Path

import polars as pl
import pytest

from tasks.config import TokenizerConfig
from tasks.records import Snapshot
from tasks.registry.register import data_stats
from tasks.tokenize.data_report import data_report, drift
from tasks.tokenize.dataset import tokenize_snapshot
from tasks.tokenize.tokenizer import Vocab


def _tokenized(tmp_path: Path, name: str, texts: list[str]):
    path = tmp_path / f"{name}.parquet"
    pl.DataFrame(
        {
            "review_id": [f"{name}{i}" for i in range(len(texts))],
            "text": texts,
            "rating": pl.Series([5] * len(texts), dtype=pl.Int8),
            "language": ["en"] * (len(texts) - 1) + ["de"],
        }
    ).write_parquet(path)
    return tokenize_snapshot(path, TokenizerConfig(vocab_size=100), tmp_path / name)


def test_drift_against_the_champions_data(tmp_path: Path) -> None:
    old = _tokenized(tmp_path, "old", ["good blender works well ."] * 300)
    # New data: longer reviews, half of them with words the old vocabulary never saw.
    new = _tokenized(
        tmp_path, "new", ["good blender works well , new words here ."] * 200 + ["zzz qqq ."] * 400
    )
    result = drift("3", json.loads(data_stats(old)), Vocab.load(old.vocab_path), new)

    assert result.reviews == (300, 600)
    assert result.train_tokens == (old.tokens["train"], new.tokens["train"])
    assert result.median_length == (5, 3) and result.p90_length == (5, 9)
    # Under the old vocabulary: ",", "new", "words", "here", "zzz", "qqq" are unknown.
    test = pl.read_parquet(new.split_path("test"))["text"].to_list()
    unknown = sum(4 if t.startswith("good") else 2 for t in test)
    total = sum(9 if t.startswith("good") else 3 for t in test)
    assert result.test_oov_rate == (0.0, pytest.approx(unknown / total))

    snapshot = Snapshot(
        path=tmp_path / "s.parquet", quarantine_path=tmp_path / "q.parquet", digest="d",
        rows_read=610, rows_ok=600, rows_quarantined=7, rows_duplicates=3,
        quarantine_reasons={"bad_rating": 5, "empty_text": 2},
        quoting={"/d/a.tsv": "csv", "/d/b.tsv": "none", "s3://x/c.csv": "csv"},
    )  # fmt: skip
    report = {row["what"]: row["value"] for row in data_report(snapshot, new, result)}
    assert report["rows read"] == 610 and report["  quarantined: bad_rating"] == 5
    assert report["CSV/TSV read with quoting=csv"] == "a.tsv, c.csv"
    assert report["CSV/TSV read with quoting=none"] == "b.tsv"
    assert report["language: de"] == 1 and report["language: en"] == 599
    assert report["train: tokens per review p50 / p90 / p99"] == "3 / 9 / 9"
    assert report["drift vs champion v3: reviews"] == "300 → 600 (+100.0%)"
    assert report["drift vs champion v3: train tokens per review, median"] == "5 → 3 (-40.0%)"
