"""Test metrics of a language model and the n-gram baselines it must beat, on the same targets.

The targets are every token of every review except the review's first (see ``tasks/train/fit.py``):
the model sees them through the training windows, the baselines through (previous token, token)
pairs. Sequences are (flat ids, offsets) pairs throughout, as read by ``read_sequences``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pyarrow.parquet as pq

from tasks.config import RegistryConfig
from tasks.evaluate.comparison import (
    TargetScores,
    draw_prompts,
    pair_scores,
    side_by_side,
    slice_labels,
    top_words,
    write_comparison,
)
from tasks.files import file_digest
from tasks.records import Champion, ChampionScore, Evaluation, TokenizedData, TrainedModel
from tasks.tokenize.tokenizer import UNK_ID, Tokenizer, Vocab
from tasks.train.model import load_language_model
from tasks.train.scoring import score_targets
from tasks.train.windows import Sequences, pack_sequences, read_sequences

logger = logging.getLogger(__name__)


def evaluate_language_model(
    model_path: Path, test_path: Path, max_len: int, batch_size: int = 64
) -> dict[str, float]:
    """Load a .keras model and score it on a test split's Parquet file (see `evaluate_ids`)."""
    model = load_language_model(model_path)
    return evaluate_ids(model, read_sequences(test_path), max_len, batch_size)


def evaluate_ids(
    model: keras.Model,
    sequences: Sequences | list[np.ndarray],
    max_len: int,
    batch_size: int = 64,
) -> dict[str, float]:
    """Next-word metrics of a logits model over every non-first token of every review.

    Args:
        model: Maps ids (B, T) to logits (B, T, V); the ids must come from its own vocabulary.
        sequences: Reviews as (flat ids, offsets), or as a list of per-review id arrays.
        max_len: Window length; only the context the model sees depends on it.
        batch_size: Windows scored at once (see `score_targets`).

    Returns:
        test_loss (mean natural-log cross-entropy), test_perplexity (its exp), test_top1,
        test_top5 (accuracy of the target among the 1 / 5 highest logits), test_tokens; the same
        as test_known_* over in-vocabulary targets only; test_oov_rate.
    """
    if isinstance(sequences, list):
        sequences = pack_sequences(sequences)
    targets, _, nll, rank = score_targets(model, sequences, max_len, batch_size)
    return summarize_targets(targets, nll, rank)


def summarize_targets(targets: np.ndarray, nll: np.ndarray, rank: np.ndarray) -> dict[str, float]:
    """The metrics of `evaluate_ids` from per-target ids, NLLs and logit ranks."""
    if len(targets) == 0:
        raise ValueError("no test targets: every review has fewer than 2 tokens")
    metrics = _summarize(nll, rank, "test")
    # The same without out-of-vocabulary targets: "[UNK]" is easy to predict and flatters a small
    # vocabulary, so models with different vocabularies compare better on known words.
    known = targets != UNK_ID
    if known.any():
        metrics |= _summarize(nll[known], rank[known], "test_known")
    metrics["test_oov_rate"] = 1.0 - float(known.mean())
    return metrics


def _summarize(nll: np.ndarray, rank: np.ndarray, prefix: str) -> dict[str, float]:
    loss = float(nll.mean())
    return {
        f"{prefix}_loss": loss,
        f"{prefix}_perplexity": math.exp(loss),
        f"{prefix}_top1": float(np.count_nonzero(rank < 1)) / len(rank),
        f"{prefix}_top5": float(np.count_nonzero(rank < 5)) / len(rank),
        f"{prefix}_tokens": float(len(rank)),
    }


def _pairs(sequences: Sequences, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(previous token, token) for every non-first token of every review, as int64."""
    values, offsets = sequences
    if values.size and (values.min() < 1 or values.max() >= vocab_size):
        raise ValueError(f"ids must lie in 1..{vocab_size - 1} (0 is padding)")
    is_target = np.ones(len(values), dtype=bool)
    is_target[offsets[:-1][np.diff(offsets) > 0]] = False
    positions = np.flatnonzero(is_target)
    values = values.astype(np.int64)
    return values[positions - 1], values[positions]


def _unigram(train_targets: np.ndarray, vocab_size: int) -> np.ndarray:
    """Add-one smoothed P(w) over ids 1..vocab_size-1; P(0) = 0."""
    if train_targets.size == 0:
        raise ValueError("no train targets: every train review has fewer than 2 tokens")
    counts = np.bincount(train_targets, minlength=vocab_size).astype(np.float64)
    probs = (counts + 1.0) / (counts.sum() + vocab_size - 1)
    probs[0] = 0.0
    return probs


def _perplexity(probs: np.ndarray) -> float:
    if probs.size == 0:
        raise ValueError("no test targets: every review has fewer than 2 tokens")
    return math.exp(-float(np.log(probs).mean()))


def unigram_perplexity(train_seqs: Sequences, test_seqs: Sequences, vocab_size: int) -> float:
    """Perplexity of an add-one unigram fit on the train targets, over the test targets."""
    _, train_targets = _pairs(train_seqs, vocab_size)
    _, test_targets = _pairs(test_seqs, vocab_size)
    return _perplexity(_unigram(train_targets, vocab_size)[test_targets])


def bigram_perplexity(train_seqs: Sequences, test_seqs: Sequences, vocab_size: int) -> float:
    """Perplexity of an interpolated Witten–Bell bigram over the test targets.

    P(w|v) = (c(v,w) + T(v)·P_uni(w)) / (c(v) + T(v)), with T(v) the number of distinct successors
    of v in train; P_uni(w) (add-one unigram) when v never precedes a token in train.
    """
    contexts, targets = _pairs(train_seqs, vocab_size)
    p_uni = _unigram(targets, vocab_size)
    codes, pair_counts = np.unique(contexts * vocab_size + targets, return_counts=True)
    context_counts = np.bincount(codes // vocab_size, weights=pair_counts, minlength=vocab_size)
    successors = np.bincount(codes // vocab_size, minlength=vocab_size).astype(np.float64)

    test_contexts, test_targets = _pairs(test_seqs, vocab_size)
    test_codes = test_contexts * vocab_size + test_targets
    found_at = np.minimum(np.searchsorted(codes, test_codes), len(codes) - 1)
    c_vw = np.where(codes[found_at] == test_codes, pair_counts[found_at], 0)

    denominator = context_counts[test_contexts] + successors[test_contexts]
    probs = p_uni[test_targets].copy()
    seen = denominator > 0
    probs[seen] = (c_vw[seen] + successors[test_contexts][seen] * probs[seen]) / denominator[seen]
    return _perplexity(probs)


def baselines(train_path: Path, test_path: Path, vocab_size: int) -> dict[str, float]:
    """Unigram and Witten–Bell bigram perplexities: fit on the train split, scored on test."""
    train_seqs, test_seqs = read_sequences(train_path), read_sequences(test_path)
    result = {
        "unigram_perplexity": unigram_perplexity(train_seqs, test_seqs, vocab_size),
        "bigram_perplexity": bigram_perplexity(train_seqs, test_seqs, vocab_size),
    }
    logger.info("baselines: %s", result)
    return result


@dataclass(frozen=True)
class ChampionRun:
    """The champion scored on this run's test split: its summary, its per-target scores and its
    top next words after the gate's prompts."""

    score: ChampionScore
    targets: TargetScores
    top_words: list[str]


def score_champion(
    champion: Champion,
    test_path: Path,
    max_len: int,
    vocab: Vocab,
    ours: TargetScores,
    prompts: list[str],
    top_k: int,
) -> ChampionRun:
    """The champion on this test split, tokenized with the champion's own vocabulary.

    Scoring its ids under our vocabulary would compare different events; re-encoding the same
    test reviews with its vocabulary compares like with like. When the two vocabularies differ,
    both models are also scored on the targets that both know (`ours`: our per-target scores):
    a vocabulary with more "[UNK]" would otherwise look better than it is.
    """
    champion_vocab = Vocab.load(champion.vocab_path)
    texts = pq.read_table(test_path, columns=["text"]).column("text").to_pylist()
    sequences = pack_sequences(Tokenizer.of(champion_vocab).encode(texts))
    model = load_language_model(champion.keras_path)
    theirs, their_owner, their_nll, _ = score_targets(model, sequences, max_len)
    their_top = top_words(model, champion_vocab, prompts, top_k)
    version = champion.version
    score = ChampionScore(
        version=version,
        perplexity=math.exp(float(their_nll.mean())),
        same_vocabulary=champion_vocab.tokens == vocab.tokens,
    )
    if not score.same_vocabulary and len(theirs) == len(ours.targets):  # same tokens, other ids
        both_know = (theirs != UNK_ID) & (ours.targets != UNK_ID)
        if both_know.any():
            score = score.model_copy(
                update={
                    "shared_perplexity": math.exp(float(their_nll[both_know].mean())),
                    "challenger_shared_perplexity": math.exp(float(ours.nll[both_know].mean())),
                }
            )
    logger.info("champion v%s on this test split: %s", version, score)
    return ChampionRun(score, TargetScores(theirs, their_owner, their_nll), their_top)


def evaluate_model(
    trained: TrainedModel,
    data: TokenizedData,
    max_len: int,
    rules: RegistryConfig,
    champion: Champion | None,
) -> Evaluation:
    """Test metrics, baselines, the champion on the same reviews, and the prompts side by side."""
    test_path = data.split_path("test")
    model = load_language_model(trained.path)
    sequences = read_sequences(test_path)
    targets, owner, nll, rank = score_targets(model, sequences, max_len)
    metrics = summarize_targets(targets, nll, rank)
    metrics |= baselines(data.split_path("train"), test_path, data.vocab_size)
    vocab = Vocab.load(data.vocab_path)
    prompts = rules.prompts or draw_prompts(test_path, rules.prompt_count, rules.prompt_words)
    ours = TargetScores(targets, owner, nll)
    champion_run = None
    if champion is not None:
        champion_run = score_champion(
            champion, test_path, max_len, vocab, ours, prompts, rules.prompt_top_k
        )
    comparison = None
    if champion_run is not None:
        paired, _ = pair_scores(
            ours, champion_run.targets, len(sequences[1]) - 1, champion_run.score.same_vocabulary
        )
        comparison = write_comparison(
            trained.path.parent / f"comparison-v{champion_run.score.version}.parquet",
            paired,
            slice_labels(test_path),
        )
    rows = side_by_side(
        prompts,
        top_words(model, vocab, prompts, rules.prompt_top_k),
        champion_run.top_words if champion_run else None,
    )
    return Evaluation(
        metrics=metrics,
        test_digest=file_digest(test_path),
        champion=champion_run.score if champion_run else None,
        comparison_path=comparison,
        side_by_side=rows,
    )
