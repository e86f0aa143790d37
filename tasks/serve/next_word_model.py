"""The registered model: raw review text in, next-word candidates out.

MLflow loads this file as "model from code" (no pickle): `load_context` reads the Keras model and
`vocab.json` shipped as artifacts, and the text goes through `tasks.tokenize.dataset` — the same
normalization and tokenizer that built the training data, shipped with the model via `code_paths`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel
from mlflow.types import ColSpec, DataType, Schema
from mlflow.types.schema import Array, Object, Property

from tasks.tokenize.tokenizer import Vocab, encode_texts

DEFAULT_TOP_K = 5
SPECIAL_IDS = (0, 1)  # [PAD] and [UNK] are never suggested

INPUT_SCHEMA = Schema(
    [ColSpec(DataType.string, "text"), ColSpec(DataType.long, "top_k", required=False)]
)
# One output row per input row (MLflow's batch tools line them up): the text, and its candidates
# most probable first, each {"word": …, "p": …}.
CANDIDATE = Object([Property("word", DataType.string), Property("p", DataType.double)])
OUTPUT_SCHEMA = Schema([ColSpec(DataType.string, "text"), ColSpec(Array(CANDIDATE), "next")])


def next_word_distribution(model: Any, vocab: Vocab, texts: list[str]) -> np.ndarray:
    """P(next word | text) over the whole vocabulary, one row per text (rows sum to 1)."""
    from tasks.train.model import next_word_probabilities

    sequences = encode_texts(texts, vocab)
    empty = [text for text, ids in zip(texts, sequences, strict=True) if len(ids) == 0]
    if empty:
        raise ValueError(f"no words to continue in {empty[0]!r}: give at least one word")
    lengths = np.array([len(ids) for ids in sequences], dtype=np.int32)
    batch = np.zeros((len(sequences), int(lengths.max())), dtype=np.int32)
    for row, ids in enumerate(sequences):
        batch[row, : len(ids)] = ids
    return next_word_probabilities(model, batch, lengths)


def top_next_words(
    model: Any, vocab: Vocab, texts: list[str], top_k: list[int]
) -> list[list[tuple[str, float]]]:
    """The `top_k[i]` most probable next words of `texts[i]`, most probable first."""
    probabilities = next_word_distribution(model, vocab, texts)
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


class NextWordModel(PythonModel):
    def load_context(self, context: Any) -> None:
        from tasks.train.model import load_language_model

        self.model = load_language_model(context.artifacts["keras_model"])
        self.vocab = Vocab.load(Path(context.artifacts["vocab"]))

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        texts = [str(text) for text in model_input["text"]]
        if "top_k" in model_input.columns:
            top_k = [int(k) if pd.notna(k) else DEFAULT_TOP_K for k in model_input["top_k"]]
        else:
            top_k = [DEFAULT_TOP_K] * len(texts)
        candidates = top_next_words(self.model, self.vocab, texts, top_k)
        return pd.DataFrame(
            {
                "text": texts,
                "next": [[{"word": word, "p": p} for word, p in row] for row in candidates],
            },
            columns=["text", "next"],
        )


mlflow.models.set_model(NextWordModel())
