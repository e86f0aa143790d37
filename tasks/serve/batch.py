"""Batch scoring: validated reviews in, next-word predictions or per-review perplexity out.

Perplexity per review finds the odd ones (spam, wrong language, garbled text): they are the reviews
the model finds least predictable, so the output is sorted by perplexity, highest first.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Literal

import keras
import polars as pl

from tasks.files import atomic_path
from tasks.records import InputError
from tasks.tokenize.tokenizer import Tokenizer, Vocab
from tasks.train.model import load_language_model
from tasks.train.scoring import review_perplexities, top_next_words
from tasks.train.windows import pack_sequences

log = logging.getLogger(__name__)

Mode = Literal["next", "perplexity"]
BATCH_REVIEWS = 256
CANDIDATE = pl.Struct({"word": pl.String, "p": pl.Float64})


def next_word_table(
    model: keras.Model, vocab: Vocab, reviews: pl.DataFrame, top_k: int
) -> pl.DataFrame:
    """One row per review, like the served model: review_id, and `next`, its `top_k` most
    probable next words as a list of {word, p}, most probable first."""
    ids: list[str] = []
    nexts: list[list[dict[str, str | float]]] = []
    for batch in reviews.iter_slices(BATCH_REVIEWS):
        texts = batch["text"].to_list()
        candidates = top_next_words(model, Tokenizer.of(vocab), texts, [top_k] * len(texts))
        ids.extend(batch["review_id"].to_list())
        nexts.extend([{"word": word, "p": p} for word, p in words] for words in candidates)
    schema: dict[str, pl.DataType] = {"review_id": pl.String(), "next": pl.List(CANDIDATE)}
    return pl.DataFrame({"review_id": ids, "next": nexts}, schema=schema)


def perplexity_table(
    model: keras.Model, vocab: Vocab, reviews: pl.DataFrame, max_len: int
) -> pl.DataFrame:
    """review_id, tokens, perplexity, text; highest perplexity first (null for 1-token reviews)."""
    sequences = pack_sequences(Tokenizer.of(vocab).encode(reviews["text"].to_list()))
    perplexity, tokens = review_perplexities(model, sequences, max_len)
    return (
        reviews.select("review_id", "text")
        .with_columns(
            tokens=pl.Series(tokens, dtype=pl.Int64),
            perplexity=pl.Series(perplexity, dtype=pl.Float64).fill_nan(None),
        )
        .sort("perplexity", descending=True, nulls_last=True)
        .select("review_id", "tokens", "perplexity", "text")
    )


def _nested_as_json(table: pl.DataFrame) -> pl.DataFrame:
    """CSV has no lists: a nested column (the next words) becomes one JSON text per row."""
    nested = [name for name, dtype in table.schema.items() if dtype.is_nested()]
    return table.with_columns(
        pl.Series(name, [json.dumps(value) for value in table[name].to_list()], pl.String)
        for name in nested
    )


def write_table(table: pl.DataFrame, out: Path) -> None:
    """Parquet or CSV by the file's extension, written atomically."""
    suffix = out.suffix.lower()
    if suffix not in {".parquet", ".csv"}:
        raise InputError(f"{out}: output must end in .parquet or .csv")
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out, suffix) as tmp:
        if suffix == ".parquet":
            table.write_parquet(tmp)
        else:
            _nested_as_json(table).write_csv(tmp)


def score_snapshot(
    snapshot: Path,
    keras_path: Path,
    vocab_path: Path,
    mode: Mode,
    out: Path,
    top_k: int,
    max_len: int,
) -> int:
    """Score every review of a snapshot with a model's files; returns the rows written."""
    reviews = pl.read_parquet(snapshot, columns=["review_id", "text"])
    model, vocab = load_language_model(keras_path), Vocab.load(vocab_path)
    if mode == "next":
        table = next_word_table(model, vocab, reviews, top_k)
    else:
        table = perplexity_table(model, vocab, reviews, max_len)
    write_table(table, out)
    log.info("scored %d reviews (%s) → %s", reviews.height, mode, out)
    return table.height
