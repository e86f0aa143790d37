"""The registered model: raw review text in, next-word candidates out.

MLflow loads this file as "model from code" (no pickle): `load_context` reads the Keras model and
`vocab.json` shipped as artifacts, and the text goes through `tasks.tokenize.dataset` — the same
normalization and tokenizer that built the training data, shipped with the model via `code_paths`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel
from mlflow.types import ColSpec, DataType, Schema
from mlflow.types.schema import Array, Object, Property

from tasks.config import ServeConfig
from tasks.tokenize.tokenizer import Tokenizer
from tasks.train.scoring import top_next_words

DEFAULT_TOP_K = ServeConfig().top_k  # rows without a top_k

INPUT_SCHEMA = Schema(
    [ColSpec(DataType.string, "text"), ColSpec(DataType.long, "top_k", required=False)]
)
# One output row per input row (MLflow's batch tools line them up): the text, and its candidates
# most probable first, each {"word": …, "p": …}.
CANDIDATE = Object([Property("word", DataType.string), Property("p", DataType.double)])
OUTPUT_SCHEMA = Schema([ColSpec(DataType.string, "text"), ColSpec(Array(CANDIDATE), "next")])


class NextWordModel(PythonModel):
    def load_context(self, context: Any) -> None:
        from tasks.train.model import load_language_model

        self.model = load_language_model(context.artifacts["keras_model"])
        self.tokenizer = Tokenizer.load(Path(context.artifacts["vocab"]))

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        texts = [str(text) for text in model_input["text"]]
        if "top_k" in model_input.columns:
            top_k = [int(k) if pd.notna(k) else DEFAULT_TOP_K for k in model_input["top_k"]]
        else:
            top_k = [DEFAULT_TOP_K] * len(texts)
        candidates = top_next_words(self.model, self.tokenizer, texts, top_k)
        return pd.DataFrame(
            {
                "text": texts,
                "next": [[{"word": word, "p": p} for word, p in row] for row in candidates],
            },
            columns=["text", "next"],
        )


mlflow.models.set_model(NextWordModel())
