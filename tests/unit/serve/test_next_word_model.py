"""The registered pyfunc model, saved and loaded for real (tiny untrained Keras model)."""

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import polars as pl
import pytest

from tasks.registry.pyfunc import SERVING_CODE, save_pyfunc
from tasks.serve.batch import next_word_table, write_table
from tasks.serve.next_word_model import OUTPUT_SCHEMA
from tasks.serve.predict import generate, next_words
from tasks.tokenize.tokenizer import Vocab
from tasks.train.model import build_language_model

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
    save_pyfunc(root / "saved", root / "model.keras", root / "vocab.json")
    return mlflow.pyfunc.load_model(str(root / "saved"))


def test_predict_returns_one_row_per_input(pyfunc_model: mlflow.pyfunc.PyFuncModel) -> None:
    texts = ["The <b>blender</b> is", "the", "the"]
    frame = pyfunc_model.predict(pd.DataFrame({"text": texts, "top_k": [3, 5, 1]}))

    assert list(frame.columns) == ["text", "next"]
    assert frame["text"].tolist() == texts  # lined up with the input, as spark_udf expects
    assert [len(candidates) for candidates in frame["next"]] == [3, 5, 1]
    first = frame["next"][0]
    assert [p["p"] for p in first] == sorted((p["p"] for p in first), reverse=True)
    words = {c["word"] for candidates in frame["next"] for c in candidates}
    assert not {"[PAD]", "[UNK]"} & words and words <= set(TOKENS)
    assert all(0 <= c["p"] <= 1 for candidates in frame["next"] for c in candidates)
    # top_k is per row: the same text asked for 1 gets the best of its 5 (words may tie, p not;
    # the rows are computed in batches of different widths, so p agrees to rounding)
    assert frame["next"][2][0]["p"] == pytest.approx(frame["next"][1][0]["p"], rel=1e-6)


def test_signature_says_each_row_holds_a_list_of_word_and_p() -> None:
    assert OUTPUT_SCHEMA.to_dict() == [
        {"type": "string", "name": "text", "required": True},
        {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "p": {"type": "double", "required": True},
                    "word": {"type": "string", "required": True},
                },
            },
            "name": "next",
            "required": True,
        },
    ]


def test_batch_next_words_are_one_row_per_review(tmp_path: Path) -> None:
    model = build_language_model(len(TOKENS), embedding_dim=4, units=4)
    vocab = Vocab(TOKENS, [0, 0, 5, 4, 3, 2, 1], lowercase=True)
    reviews = pl.DataFrame({"review_id": ["a", "b"], "text": ["the blender", "great"]})

    table = next_word_table(model, vocab, reviews, top_k=3)

    assert table["review_id"].to_list() == ["a", "b"]
    assert [len(row) for row in table["next"].to_list()] == [3, 3]
    write_table(table, tmp_path / "next.csv")
    from_csv = pl.read_csv(tmp_path / "next.csv")
    assert json.loads(from_csv["next"][0]) == table["next"][0].to_list()


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


def test_the_saved_model_ships_only_the_serving_modules(tmp_path: Path) -> None:
    Vocab(TOKENS, [0, 0, 5, 4, 3, 2, 1], lowercase=True).save(tmp_path / "vocab.json")
    build_language_model(len(TOKENS), embedding_dim=4, units=4).save(tmp_path / "model.keras")
    save_pyfunc(tmp_path / "saved", tmp_path / "model.keras", tmp_path / "vocab.json")
    code = tmp_path / "saved" / "code" / "tasks"
    shipped = {str(p.relative_to(code)) for p in code.rglob("*.py")}
    assert shipped == set(SERVING_CODE)
    assert not {"registry/register.py", "train/fit.py", "ingest/task.py"} & shipped
