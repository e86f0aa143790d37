# ruff: noqa: E402  (the path fix below must run before the imports)
"""The learning curve with bf16 products against fp32: the default recipe on the same data.

The corpus is tests/unit/test_learning.py's (1000 demo reviews with a Zipf tail of 3000 rare
words); the default recipe trains once with ``train.precision = fp32`` and once with ``bf16``
(same seed, same windows), and the test perplexity of each is printed with its epochs.

    .venv/bin/python benchmarks/precision.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

# benchmarks/tokenize.py shadows the standard library's `tokenize`: take this directory off the
# import path first, and put the repository on it.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras

from tasks.config import PipelineConfig
from tasks.evaluate.metrics import summarize_targets
from tasks.ingest.snapshot import ingest
from tasks.tokenize.dataset import tokenize_snapshot
from tasks.train.fit import train_model
from tasks.train.scoring import score_targets
from tasks.train.windows import read_sequences
from tests.unit.test_learning import _reviews_with_rare_words


def main() -> None:
    config = PipelineConfig()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        source = _reviews_with_rare_words(work / "reviews.csv")
        snapshot = ingest(str(source), config.ingest, work / "snapshots")
        data = tokenize_snapshot(snapshot.path, config.tokenizer, work / "tokenized")
        test = read_sequences(data.split_path("test"))
        results = {}
        for precision in ("fp32", "bf16"):
            train_cfg = config.train.model_copy(update={"precision": precision})
            trained = train_model(data, config.model, train_cfg, work / precision)
            model = keras.models.load_model(trained.path)
            targets, _, nll, rank = score_targets(model, test, train_cfg.max_len)
            results[precision] = summarize_targets(targets, nll, rank)["test_perplexity"]
            curve = [round(p, 2) for p in trained.history["val_perplexity"]]
            print(
                f"{precision}: test perplexity {results[precision]:.3f}, "
                f"{trained.epochs_run} epochs (best {trained.best_epoch}), "
                f"val perplexity by epoch {curve}",
                flush=True,
            )
        change = results["bf16"] / results["fp32"] - 1
        print(f"bf16 vs fp32 test perplexity: {100 * change:+.2f} %")


if __name__ == "__main__":
    main()
