"""The registered pyfunc model, saved and loaded for real (tiny untrained Keras model)."""

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.models import ModelSignature

from tasks.model import build_language_model
from tasks.next_word_model import INPUT_SCHEMA, OUTPUT_SCHEMA
from tasks.predict import generate, next_words
from tasks.register import MODEL_CODE, TASKS_DIR
from tasks.text import Vocab

TOKENS = ["[PAD]", "[UNK]", "the", "blender", "is", "great", "."]


@pytest.fixture(scope="module")
def pyfunc_model(tmp_path_factory: pytest.TempPathFactory) -> mlflow.pyfunc.PyFuncModel:
    root = tmp_path_factory.mktemp("pyfunc")
    keras_model = build_language_model(len(TOKENS), embedding_dim=4, units=4)
    # Make [PAD] and [UNK] the most likely outputs: the model must still never suggest them.
    bias = keras_model.get_layer("logits").bias
    bias.assign(np.array([9.0, 9.0, 0, 0, 0, 0, 0], dtype=np.float32))
    keras_model.save(root / "model.keras")
    Vocab(TOKENS, [0, 0, 5, 4, 3, 2, 1], lowercase=True).save(root / "vocab.json")
    mlflow.pyfunc.save_model(
        root / "saved",
        python_model=str(MODEL_CODE),
        artifacts={"keras_model": str(root / "model.keras"), "vocab": str(root / "vocab.json")},
        code_paths=[str(TASKS_DIR)],
        signature=ModelSignature(inputs=INPUT_SCHEMA, outputs=OUTPUT_SCHEMA),
    )
    return mlflow.pyfunc.load_model(str(root / "saved"))


def test_predict_ranks_real_words_by_probability(pyfunc_model: mlflow.pyfunc.PyFuncModel) -> None:
    frame = pyfunc_model.predict(
        pd.DataFrame({"text": ["The <b>blender</b> is", "the"], "top_k": [3, 5]})
    )

    assert list(frame.columns) == ["text", "rank", "word", "p"]
    first = frame[frame["text"] == "The <b>blender</b> is"]
    assert first["rank"].tolist() == [1, 2, 3]
    assert first["p"].is_monotonic_decreasing
    assert len(frame[frame["text"] == "the"]) == 5
    assert not {"[PAD]", "[UNK]"} & set(frame["word"])
    assert frame["p"].between(0, 1).all()


def test_next_words_defaults_and_empty_text(pyfunc_model: mlflow.pyfunc.PyFuncModel) -> None:
    assert len(next_words(pyfunc_model, "the blender", top_k=2)) == 2
    with pytest.raises(ValueError, match="no words"):
        next_words(pyfunc_model, "<br />  ")


def test_generation_is_reproducible_with_a_seed(pyfunc_model: mlflow.pyfunc.PyFuncModel) -> None:
    first = generate(pyfunc_model, "the", words=8, seed=7)
    assert first == generate(pyfunc_model, "the", words=8, seed=7)
    assert first.startswith("the ")
    assert "[UNK]" not in first and "[PAD]" not in first
    assert len(first.split()) >= 5
