"""Test metrics of the language model and the unigram / Witten–Bell bigram baselines."""

from __future__ import annotations

import math
from pathlib import Path

import keras
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.evaluate.metrics import (
    baselines,
    bigram_perplexity,
    evaluate_ids,
    evaluate_language_model,
    unigram_perplexity,
)
from tasks.train.model import build_language_model
from tasks.train.scoring import review_perplexities
from tasks.train.windows import pack_sequences

# Ids 1..5 are words, 0 is padding.
V = 6
TRAIN = [[2, 3, 4], [2, 3, 3], [5]]  # pairs (2,3) (3,4) (2,3) (3,3); [5] has no target
TEST = [[2, 3, 5], [4, 2]]  # pairs (2,3) (3,5) (4,2)


def seqs(reviews: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    return pack_sequences([np.array(r, dtype=np.int32) for r in reviews])


def p_uni(w: int) -> float:
    """Add-one over the 5 ids 1..5; train targets are 3, 4, 3, 3 (N = 4)."""
    counts = {3: 3, 4: 1}
    return (counts.get(w, 0) + 1) / (4 + 5)


def test_unigram_perplexity_by_hand() -> None:
    expected = math.exp(-(math.log(p_uni(3)) + math.log(p_uni(5)) + math.log(p_uni(2))) / 3)
    assert p_uni(3) == pytest.approx(4 / 9)
    assert unigram_perplexity(seqs(TRAIN), seqs(TEST), V) == pytest.approx(expected)


def test_witten_bell_bigram_perplexity_by_hand() -> None:
    # Context 2: c(2,3) = 2, c(2) = 2, T(2) = 1.  Context 3: c(3,4) = c(3,3) = 1, c(3) = 2,
    # T(3) = 2.  Context 4 never precedes a token in train: back off to the unigram.
    p_3_after_2 = (2 + 1 * p_uni(3)) / (2 + 1)
    p_5_after_3 = (0 + 2 * p_uni(5)) / (2 + 2)
    p_2_after_4 = p_uni(2)
    assert p_3_after_2 == pytest.approx(22 / 27)
    assert p_5_after_3 == pytest.approx(1 / 18)
    log_probs = [math.log(p_3_after_2), math.log(p_5_after_3), math.log(p_2_after_4)]
    expected = math.exp(-sum(log_probs) / 3)
    assert bigram_perplexity(seqs(TRAIN), seqs(TEST), V) == pytest.approx(expected)


def test_witten_bell_rows_sum_to_one() -> None:
    # Scoring every possible successor of context 3 once: the probabilities must sum to 1.
    single = [bigram_perplexity(seqs(TRAIN), seqs([[3, w]]), V) for w in range(1, V)]
    assert sum(1 / ppl for ppl in single) == pytest.approx(1.0)


def test_ids_outside_the_vocabulary_are_refused() -> None:
    with pytest.raises(ValueError, match="ids must lie in"):
        unigram_perplexity(seqs(TRAIN), seqs([[2, V]]), V)


def write_split(path: Path, reviews: list[list[int]]) -> Path:
    table = pa.table(
        {
            "review_id": [f"r{i}" for i in range(len(reviews))],
            "language": [None] * len(reviews),
            "ids": pa.array(reviews, type=pa.list_(pa.int32())),
            "text": ["…"] * len(reviews),
        }
    )
    pq.write_table(table, path)
    return path


def test_baselines_read_the_splits(tmp_path: Path) -> None:
    result = baselines(
        write_split(tmp_path / "train.parquet", TRAIN),
        write_split(tmp_path / "test.parquet", TEST),
        V,
    )
    assert result == {
        "unigram_perplexity": pytest.approx(unigram_perplexity(seqs(TRAIN), seqs(TEST), V)),
        "bigram_perplexity": pytest.approx(bigram_perplexity(seqs(TRAIN), seqs(TEST), V)),
    }


def test_language_model_metrics(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    reviews = [rng.integers(1, 17, size=n).tolist() for n in rng.integers(0, 12, size=30)]
    keras.utils.set_random_seed(0)
    model = build_language_model(17, embedding_dim=4, units=4)
    model.save(tmp_path / "model.keras")
    test_path = write_split(tmp_path / "test.parquet", reviews)

    metrics = evaluate_language_model(tmp_path / "model.keras", test_path, max_len=4, batch_size=8)

    assert metrics["test_tokens"] == sum(max(len(r) - 1, 0) for r in reviews)
    assert all(math.isfinite(v) for v in metrics.values())
    assert 0.0 <= metrics["test_top1"] <= metrics["test_top5"] <= 1.0
    assert metrics["test_perplexity"] == pytest.approx(math.exp(metrics["test_loss"]))
    # Reference: whole reviews (max_len ≥ every length) through a plain float64 log-softmax.
    whole = evaluate_ids(model, [np.array(r) for r in reviews], max_len=16, batch_size=5)
    nll = []
    for review in (r for r in reviews if len(r) > 1):
        logits = np.asarray(model(np.array([review[:-1]]))[0], dtype=np.float64)
        log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        nll.extend(-log_probs[np.arange(len(review) - 1), review[1:]])
    assert whole["test_loss"] == pytest.approx(np.mean(nll), rel=1e-5)
    assert whole["test_tokens"] == metrics["test_tokens"]
    # Out-of-vocabulary targets (id 1) left out of the "known" metrics.
    targets = np.array([t for r in reviews for t in r[1:]])
    known_nll = np.array(nll)[targets != 1]
    assert whole["test_oov_rate"] == pytest.approx(np.mean(targets == 1))
    assert whole["test_known_tokens"] == len(known_nll)
    assert whole["test_known_loss"] == pytest.approx(known_nll.mean(), rel=1e-5)


def test_review_perplexities_match_a_per_review_reference() -> None:
    rng = np.random.default_rng(2)
    reviews = [rng.integers(1, 9, size=n) for n in (5, 1, 9, 3)]
    keras.utils.set_random_seed(0)
    model = build_language_model(9, embedding_dim=4, units=4)

    perplexity, tokens = review_perplexities(model, pack_sequences(reviews), max_len=4)

    assert tokens.tolist() == [4, 0, 8, 2]
    assert math.isnan(perplexity[1])
    for i in (0, 2, 3):
        logits = np.asarray(model(reviews[i][None, :-1])[0], dtype=np.float64)
        log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        nll = -log_probs[np.arange(len(reviews[i]) - 1), reviews[i][1:]]
        # max_len 4 cuts review 2 into two windows: the second sees less context
        if i != 2:
            assert perplexity[i] == pytest.approx(math.exp(nll.mean()), rel=1e-5)
    assert np.isfinite(perplexity[2]) and perplexity[2] > 1
