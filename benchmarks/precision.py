"""The learning curve with bf16 products against fp32: the default recipe on the same data.

The corpus is tests/unit/train/test_learning.py's (979 real Drugs.com reviews); the default recipe
trains once with ``train.precision = fp32`` and once with ``bf16`` (same seed, same windows), and
the test perplexity of each is printed with its epochs.

    .venv/bin/python benchmarks/precision.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import keras

from tasks.config import PipelineConfig
from tasks.evaluate.metrics import summarize_targets
from tasks.ingest.snapshot import ingest
from tasks.tokenize.dataset import tokenize_snapshot
from tasks.train.fit import train_model
from tasks.train.scoring import score_targets
from tasks.train.windows import read_sequences

# Real review text (tests/data/README.md: Drugs.com, CC BY 4.0), as the learning test trains on.
REVIEWS = Path(__file__).parents[1] / "tests" / "data" / "drugscom-979.tsv"


def main() -> None:
    config = PipelineConfig.load(
        overrides={"ingest.text_columns": ["review"], "ingest.rating_column": None}
    )
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        snapshot = ingest(str(REVIEWS), config.ingest, work / "snapshots")
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
