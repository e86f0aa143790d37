"""Use a registered model: next-word candidates and text generation, by model URI."""

from __future__ import annotations

import math
import random
import re
from typing import cast

import mlflow
import pandas as pd
from mlflow.pyfunc import PyFuncModel

from tasks.config import ServeConfig

GENERATION_CANDIDATES = 50
_NO_SPACE_BEFORE = re.compile(r"\s+([.,!?;:)\]}])")


def default_model_uri(model_name: str, alias: str) -> str:
    return f"models:/{model_name}@{alias}"


def load_model(model_uri: str) -> PyFuncModel:
    return mlflow.pyfunc.load_model(model_uri)


def next_words(
    model: PyFuncModel, text: str, top_k: int = ServeConfig().top_k
) -> list[dict[str, float | str]]:
    """The `top_k` most probable next words after `text`, most probable first."""
    frame = cast(pd.DataFrame, model.predict(pd.DataFrame({"text": [text], "top_k": [top_k]})))
    return [{"word": str(c["word"]), "p": float(c["p"])} for c in frame["next"].iloc[0]]


def generate(
    model: PyFuncModel,
    text: str,
    words: int = 20,
    temperature: float = 1.0,
    seed: int | None = None,
) -> str:
    """Continue `text` by `words` tokens, sampling among the 50 most probable at `temperature`."""
    if temperature <= 0:
        raise ValueError("temperature must be > 0")
    rng = random.Random(seed)
    generated: list[str] = []
    for _ in range(words):
        context = " ".join([text, *generated])
        candidates = next_words(model, context, GENERATION_CANDIDATES)
        # p ** (1 / temperature), scaled by the top candidate's so that it cannot underflow to 0
        log_p = [math.log(max(float(c["p"]), 1e-300)) for c in candidates]
        weights = [math.exp((lp - log_p[0]) / temperature) for lp in log_p]
        generated.append(str(rng.choices(candidates, weights=weights)[0]["word"]))
    return _NO_SPACE_BEFORE.sub(r"\1", " ".join([text, *generated]))
