"""Text scored by a trained language model: each target's NLL and rank, per-review perplexity,
the next-word distribution and its top words.

Evaluation, batch scoring and the served model all score through these functions, so the three
agree on what a model predicts.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tasks.tokenize.tokenizer import Tokenizer
from tasks.train.model import next_word_probabilities
from tasks.train.windows import Sequences, make_windows, window_owners

SPECIAL_IDS = (0, 1)  # [PAD] and [UNK] are never suggested


def review_perplexities(
    model: keras.Model, sequences: Sequences, max_len: int, batch_size: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """Per review: perplexity of its non-first tokens (nan when it has none), and their count."""
    _, owner, nll, _ = score_targets(model, sequences, max_len, batch_size)
    reviews = len(sequences[1]) - 1
    tokens = np.bincount(owner, minlength=reviews)
    total = np.bincount(owner, weights=nll, minlength=reviews)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.exp(total / tokens), tokens


def score_targets(
    model: keras.Model, sequences: Sequences, max_len: int, batch_size: int = 64
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every non-first token of every review: its id, its review, its NLL and its logit rank.

    The logits of a batch take B × max_len × V floats, so the batch is small: larger ones use
    more memory without running faster (README, Benchmarks).
    """
    x, y = make_windows(sequences, max_len)
    owners = window_owners(sequences, max_len)

    # Reduce each batch's logits to two numbers per position inside the graph: no B×T×V softmax
    # is returned or kept. (XLA measured no faster and no smaller here.)
    @tf.function
    def score(xb: tf.Tensor, yb: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        logits = tf.cast(model(xb, training=False), tf.float32)
        target = tf.gather(logits, yb, batch_dims=2)
        nll = tf.reduce_logsumexp(logits, axis=-1) - target
        rank = tf.reduce_sum(tf.cast(logits > target[..., None], tf.int32), axis=-1)
        return nll, rank

    nlls, ranks = [np.zeros(0)], [np.zeros(0, dtype=np.int32)]
    for start in range(0, len(x), batch_size):
        yb = y[start : start + batch_size]
        nll, rank = score(tf.constant(x[start : start + batch_size]), tf.constant(yb))
        real = yb != 0
        nlls.append(nll.numpy()[real].astype(np.float64))
        ranks.append(rank.numpy()[real])
    real = y != 0
    target_owner = np.repeat(owners, np.count_nonzero(real, axis=1))
    return y[real], target_owner, np.concatenate(nlls), np.concatenate(ranks)


def next_word_distribution(model: Any, tokenizer: Tokenizer, texts: list[str]) -> np.ndarray:
    """P(next word | text) over the whole vocabulary, one row per text (rows sum to 1)."""
    sequences = tokenizer.encode(texts)
    empty = [text for text, ids in zip(texts, sequences, strict=True) if len(ids) == 0]
    if empty:
        raise ValueError(f"no words to continue in {empty[0]!r}: give at least one word")
    lengths = np.array([len(ids) for ids in sequences], dtype=np.int32)
    batch = np.zeros((len(sequences), int(lengths.max())), dtype=np.int32)
    for row, ids in enumerate(sequences):
        batch[row, : len(ids)] = ids
    return next_word_probabilities(model, batch, lengths)


def top_next_words(
    model: Any, tokenizer: Tokenizer, texts: list[str], top_k: list[int]
) -> list[list[tuple[str, float]]]:
    """The `top_k[i]` most probable next words of `texts[i]`, most probable first."""
    probabilities = next_word_distribution(model, tokenizer, texts)
    vocab = tokenizer.vocab
    scores = probabilities.copy()
    scores[:, list(SPECIAL_IDS)] = -np.inf
    words = probabilities.shape[1] - len(SPECIAL_IDS)
    results = []
    for row, k in enumerate(top_k):
        k = min(k, words)
        # argpartition then sort the k best: O(V) instead of sorting the whole vocabulary
        best = np.argpartition(-scores[row], k - 1)[:k]
        best = best[np.argsort(-scores[row, best], kind="stable")]
        results.append([(vocab.token(int(i)), float(probabilities[row, i])) for i in best])
    return results
