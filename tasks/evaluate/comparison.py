"""Challenger and champion side by side on this run's test split, for the gate
(tasks/registry/gate.py).

Per test review, each model's summed log-loss and target count (a small Parquet file the register
stage reads back), the slices to compare them on (language, star rating), and each model's top
next words after a fixed set of prompts.
"""

from __future__ import annotations

import hashlib
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from tasks.files import write_bytes_atomically
from tasks.tokenize.tokenizer import UNK_ID, Tokenizer, Vocab
from tasks.train.scoring import top_next_words

BOTH_KNOW = "on the same test reviews, words both vocabularies know"
SAME_TARGETS = "on the same test reviews"
OWN_TOKENIZATION = "on the same test reviews, each tokenized its own way"


@dataclass(frozen=True)
class PairedScores:
    """Per test review, each model's summed natural-log loss and its number of targets.

    Both models see the same reviews; the targets may differ (the vocabulary-aware comparison
    keeps only words both vocabularies know), hence a count per model.
    """

    challenger_loss: np.ndarray
    challenger_targets: np.ndarray
    champion_loss: np.ndarray
    champion_targets: np.ndarray

    def __post_init__(self) -> None:
        lengths = {len(a) for a in self.arrays()}
        if len(lengths) != 1:
            raise ValueError(f"paired arrays differ in length: {sorted(lengths)}")

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return (
            self.challenger_loss,
            self.challenger_targets,
            self.champion_loss,
            self.champion_targets,
        )

    def subset(self, mask: np.ndarray) -> PairedScores:
        return PairedScores(*(a[mask] for a in self.arrays()))

    @property
    def targets(self) -> int:
        return int(self.challenger_targets.sum())

    def perplexities(self) -> tuple[float, float]:
        """(challenger, champion) perplexity over these reviews."""
        return (
            math.exp(self.challenger_loss.sum() / self.challenger_targets.sum()),
            math.exp(self.champion_loss.sum() / self.champion_targets.sum()),
        )

    def relative_change(self) -> float:
        """Challenger perplexity / champion perplexity − 1: negative is an improvement."""
        ours, theirs = self.perplexities()
        return ours / theirs - 1.0


@dataclass(frozen=True)
class TargetScores:
    """One model's scores of every non-first test token: its id, its review and its NLL."""

    targets: np.ndarray
    owner: np.ndarray
    nll: np.ndarray


def pair_scores(
    ours: TargetScores, theirs: TargetScores, reviews: int, same_vocabulary: bool
) -> tuple[PairedScores, str]:
    """Per-review sums of both models, and on what they were compared.

    Different vocabularies give the same tokens different ids but the same number of targets per
    review, so they line up one to one and are compared on the words both know (more "[UNK]"
    would otherwise look better). Different tokenizations cannot line up: each model keeps its
    own targets, still paired by review.
    """
    keep_ours = np.ones(len(ours.targets), dtype=bool)
    keep_theirs = np.ones(len(theirs.targets), dtype=bool)
    where = SAME_TARGETS
    if len(ours.targets) != len(theirs.targets):
        where = OWN_TOKENIZATION
    elif not same_vocabulary:
        keep_ours = keep_theirs = (ours.targets != UNK_ID) & (theirs.targets != UNK_ID)
        where = BOTH_KNOW

    def sums(scores: TargetScores, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        owner = scores.owner[keep]
        loss = np.bincount(owner, weights=scores.nll[keep], minlength=reviews)
        return loss, np.bincount(owner, minlength=reviews).astype(np.int64)

    return PairedScores(*sums(ours, keep_ours), *sums(theirs, keep_theirs)), where


def slice_labels(test_path: Path) -> dict[str, np.ndarray]:
    """Per test review: its language ("unknown" when not given) and, when any review has one,
    its star rating ("none" when missing)."""
    schema = pq.read_schema(test_path)
    columns = [c for c in ("language", "rating") if c in schema.names]
    frame = pl.read_parquet(test_path, columns=columns)
    labels: dict[str, np.ndarray] = {}
    if "language" in columns:
        labels["language"] = frame["language"].fill_null("unknown").cast(pl.String).to_numpy()
    if "rating" in columns and frame["rating"].null_count() < frame.height:
        labels["rating"] = frame["rating"].cast(pl.String).fill_null("none").to_numpy()
    return labels


def write_comparison(path: Path, scores: PairedScores, labels: dict[str, np.ndarray]) -> Path:
    frame = pl.DataFrame(
        {
            "challenger_loss": scores.challenger_loss,
            "challenger_targets": scores.challenger_targets,
            "champion_loss": scores.champion_loss,
            "champion_targets": scores.champion_targets,
            **{f"slice_{kind}": values for kind, values in labels.items()},
        }
    )
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    write_bytes_atomically(path, buffer.getvalue())
    return path


def read_comparison(path: Path) -> tuple[PairedScores, dict[str, np.ndarray]]:
    frame = pl.read_parquet(path)
    scores = PairedScores(
        *(
            frame[column].to_numpy()
            for column in (
                "challenger_loss",
                "challenger_targets",
                "champion_loss",
                "champion_targets",
            )
        )
    )
    labels = {
        column.removeprefix("slice_"): frame[column].to_numpy()
        for column in frame.columns
        if column.startswith("slice_")
    }
    return scores, labels


def draw_prompts(test_path: Path, count: int, words: int) -> list[str]:
    """`count` prompts of the first `words` tokens of test reviews that have more tokens.

    Reviews are taken in the order of a hash of their id, so that the same reviews give the same
    prompts from run to run and new reviews rarely displace them.
    """
    frame = pl.read_parquet(test_path, columns=["review_id", "text"])
    tokens = Tokenizer().tokenize(frame["text"].to_list())
    keyed = sorted(
        (hashlib.sha1(str(review_id).encode()).hexdigest(), review_tokens)
        for review_id, review_tokens in zip(frame["review_id"], tokens, strict=True)
        if len(review_tokens) > words
    )
    return [" ".join(review_tokens[:words]) for _, review_tokens in keyed[:count]]


def top_words(model: Any, vocab: Vocab, prompts: list[str], top_k: int) -> list[str]:
    """Per prompt, the model's `top_k` next words with their probabilities, as one string."""
    if not prompts:
        return []
    candidates = top_next_words(model, Tokenizer.of(vocab), prompts, [top_k] * len(prompts))
    return [", ".join(f"{word} ({p:.2f})" for word, p in words) for words in candidates]


def side_by_side(
    prompts: list[str], challenger: list[str], champion: list[str] | None
) -> list[dict[str, str]]:
    """Rows of prompt, the challenger's and the champion's top next words ('' without one)."""
    theirs = champion if champion is not None else [""] * len(prompts)
    return [
        {"prompt": prompt, "challenger": ours, "champion": their}
        for prompt, ours, their in zip(prompts, challenger, theirs, strict=True)
    ]
