"""The pyfunc model's files: the one place that says what a saved or logged model is made of.

Register logs it to a run; tests and the predict benchmark save it to a directory; both get the
same model code, artifacts, signature and the same subset of `tasks/` as its code.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from mlflow.models import ModelSignature

from tasks.serve.next_word_model import INPUT_SCHEMA, OUTPUT_SCHEMA

TASKS_DIR = Path(__file__).parents[1]
MODEL_CODE = TASKS_DIR / "serve" / "next_word_model.py"
# What the served model imports, and nothing else: its code must not need the pipeline's stages
# (Prefect, the trainer, the registry) to load.
SERVING_CODE = (
    "__init__.py",
    "config.py",
    "records.py",
    "files.py",
    "tokenize/__init__.py",
    "tokenize/tokenizer.py",
    "train/__init__.py",
    "train/model.py",
    "train/scoring.py",
    "train/windows.py",
    "serve/__init__.py",
    "serve/next_word_model.py",
)


@contextmanager
def pyfunc_files(keras_path: Path, vocab_path: Path) -> Iterator[dict[str, Any]]:
    """The arguments `mlflow.pyfunc.save_model` and `log_model` share, valid inside the block
    (the code is staged in a temporary directory until MLflow has copied it)."""
    with tempfile.TemporaryDirectory(prefix="reviewgru-code-") as tmp:
        code = Path(tmp) / "tasks"
        for name in SERVING_CODE:
            (code / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(TASKS_DIR / name, code / name)
        yield {
            "python_model": str(MODEL_CODE),
            "artifacts": {"keras_model": str(keras_path), "vocab": str(vocab_path)},
            "code_paths": [str(code)],
            "signature": ModelSignature(inputs=INPUT_SCHEMA, outputs=OUTPUT_SCHEMA),
        }


def save_pyfunc(path: Path, keras_path: Path, vocab_path: Path) -> None:
    """The served model, saved to a directory (what register logs, without a run)."""
    with pyfunc_files(keras_path, vocab_path) as files:
        mlflow.pyfunc.save_model(str(path), **files)
