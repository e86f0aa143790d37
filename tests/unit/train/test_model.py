"""The GRU language model: shapes, probabilities, and independence from right padding."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tasks.train.model import build_language_model, next_word_probabilities

VOCAB = 23


@pytest.fixture(scope="module")
def model() -> keras.Model:
    keras.utils.set_random_seed(0)
    return build_language_model(VOCAB, embedding_dim=8, units=8)


def test_logits_have_one_row_per_position(model: keras.Model) -> None:
    ids = np.array([[2, 3, 4, 0, 0], [5, 6, 7, 8, 9]], dtype=np.int32)
    assert tuple(model(ids).shape) == (2, 5, VOCAB)
    assert tuple(model(ids[:, :3]).shape) == (2, 3, VOCAB)


def test_probabilities_sum_to_one(model: keras.Model) -> None:
    ids = np.array([[2, 3, 4, 0, 0], [5, 6, 7, 8, 9], [1, 0, 0, 0, 0]], dtype=np.int32)
    probs = next_word_probabilities(model, ids, np.array([3, 5, 1]))
    assert probs.shape == (3, VOCAB)
    assert probs.dtype == np.float64
    assert np.all(probs >= 0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-12)


def test_outputs_at_real_positions_ignore_right_padding(model: keras.Model) -> None:
    real = np.array([[4, 9, 2, 17]], dtype=np.int32)
    padded = np.pad(real, ((0, 0), (0, 6)))
    np.testing.assert_allclose(
        np.asarray(model(padded))[:, :4], np.asarray(model(real)), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        next_word_probabilities(model, padded, np.array([4])),
        next_word_probabilities(model, real, np.array([4])),
        rtol=1e-5,
        atol=1e-7,
    )


def test_probabilities_follow_each_rows_own_length(model: keras.Model) -> None:
    ids = np.array([[4, 9, 2, 17], [4, 9, 0, 0]], dtype=np.int32)
    probs = next_word_probabilities(model, ids, np.array([4, 2]))
    alone = next_word_probabilities(model, ids[:1, :2], np.array([2]))
    np.testing.assert_allclose(probs[1], alone[0], rtol=1e-5, atol=1e-7)


def test_lengths_out_of_range_are_refused(model: keras.Model) -> None:
    with pytest.raises(ValueError, match="lengths"):
        next_word_probabilities(model, np.array([[3, 4]]), np.array([0]))
