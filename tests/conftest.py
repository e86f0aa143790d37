"""Test isolation: Prefect and MLflow never touch the user's ~/.prefect or the repo's mlruns/."""

import atexit
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.records import TokenizedData

# Set before anything imports prefect: its settings are read at import time.
_HOME = tempfile.mkdtemp(prefix="reviewgru-tests-")
atexit.register(shutil.rmtree, _HOME, ignore_errors=True)
os.environ["PREFECT_HOME"] = os.path.join(_HOME, "prefect")
os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{_HOME}/mlflow/mlflow.db"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.makedirs(os.path.join(_HOME, "mlflow"), exist_ok=True)


# Toy tokenized data, shared by the train, resume and disk-full tests: ids 2..11 counting up and
# wrapping, so the next word is always predictable and a few epochs learn it.
TOY_VOCAB = 12


def _write_split(path: Path, reviews: list[list[int]], row_group_size: int = 64) -> None:
    table = pa.table(
        {
            "review_id": [f"r{i}" for i in range(len(reviews))],
            "language": ["en"] * len(reviews),
            "ids": pa.array(reviews, type=pa.list_(pa.int32())),
        }
    )
    pq.write_table(table, path, row_group_size=row_group_size)


def _toy_reviews(count: int, rng: np.random.Generator) -> list[list[int]]:
    """Reviews counting up through ids 2..11 and wrapping: the next word is always predictable."""
    starts = rng.integers(0, TOY_VOCAB - 2, size=count)
    lengths = rng.integers(4, 14, size=count)
    return [
        [2 + (s + k) % (TOY_VOCAB - 2) for k in range(n)]
        for s, n in zip(starts, lengths, strict=True)
    ]


def _toy_data(directory: Path, val_reviews: list[list[int]] | None = None) -> TokenizedData:
    rng = np.random.default_rng(7)
    splits = {
        "train": _toy_reviews(200, rng),
        "val": _toy_reviews(40, rng) if val_reviews is None else val_reviews,
        "test": _toy_reviews(40, rng),
    }
    for split, reviews in splits.items():
        _write_split(directory / f"{split}.parquet", reviews)
    return TokenizedData(
        dir=directory,
        digest="toy",
        vocab_size=TOY_VOCAB,
        reviews={split: len(reviews) for split, reviews in splits.items()},
        tokens={split: sum(map(len, reviews)) for split, reviews in splits.items()},
        oov_rate={split: 0.0 for split in splits},
    )


WriteSplit = Callable[..., None]
ToyData = Callable[..., TokenizedData]


@pytest.fixture(scope="session")
def write_split() -> WriteSplit:
    """Writes reviews of ids as a split's Parquet file."""
    return _write_split


@pytest.fixture(scope="session")
def toy_data() -> ToyData:
    """Writes toy train/val/test splits into a directory and returns their TokenizedData."""
    return _toy_data
