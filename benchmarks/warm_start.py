"""Warm start against a scratch retrain on a grown corpus, in one run.

A corpus of reviews, then the same corpus with 10 % new reviews (`--growth`): the first is
trained from scratch (the champion); the grown one is trained from scratch and warm-started from
that champion (rows mapped by word, `tasks/warm_start.py`) with the configured
`train.warm_learning_rate` / `train.warm_epochs`, or each `--warm LR:EPOCHS` given. Every model is
scored on the grown corpus's test split; the table gives each one's wall time (the whole fit:
XLA compiling and validation included), epochs and test perplexity, and the warm starts' time and
perplexity relative to the scratch retrain. The new reviews are drawn at random (seeded) from the
file: the base corpus is the rest, so a review's split is the same in both (stable hash split).

    .venv/bin/python benchmarks/warm_start.py                      # tests/data/drugscom-979.tsv
    .venv/bin/python benchmarks/warm_start.py --data 'reviews/*.csv' --text-column review \\
        --rows 1500 --warm 2e-3:4 --warm 1e-3:3
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import polars as pl

from tasks.config import PipelineConfig, TrainConfig
from tasks.evaluate.metrics import evaluate_language_model
from tasks.ingest.snapshot import ingest
from tasks.records import TokenizedData, TrainedModel
from tasks.tokenize.dataset import tokenize_snapshot
from tasks.tokenize.tokenizer import Vocab
from tasks.train.fit import train_model
from tasks.train.model import load_language_model
from tasks.train.warm_start import WarmStart, warm_train_config

DEFAULT_DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "drugscom-979.tsv"


def corpora(args: argparse.Namespace, config: PipelineConfig, work: Path) -> tuple[Path, Path]:
    """Snapshots of the grown corpus (the first `rows` reviews) and of the base (the grown one
    without a seeded random `growth / (1 + growth)` of its reviews)."""
    snapshot = ingest(args.data, config.ingest, work / "snapshots")
    grown = pl.read_parquet(snapshot.path)
    if args.rows:
        grown = grown.head(args.rows)
    new = np.random.default_rng(args.seed).random(grown.height) < args.growth / (1 + args.growth)
    base = grown.filter(pl.Series(~new))
    paths = work / "grown.parquet", work / "base.parquet"
    grown.write_parquet(paths[0])
    base.write_parquet(paths[1])
    print(f"corpus {base.height} reviews, grown {grown.height} (+{new.sum()} new)", flush=True)
    return paths


class EpochSeconds(keras.callbacks.Callback):
    """Each epoch's wall seconds: the first holds XLA's compiling, a fixed cost of every fit."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.seconds.append(time.perf_counter() - self._started)


def test_perplexity(trained: TrainedModel, data: TokenizedData, max_len: int) -> float:
    return evaluate_language_model(trained.path, data.split_path("test"), max_len)[
        "test_perplexity"
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="reviews: file, dir or glob")
    parser.add_argument("--text-column", default="review")
    parser.add_argument("--rows", type=int, default=None, help="use the first N reviews")
    parser.add_argument("--growth", type=float, default=0.1, help="new reviews, share of base")
    parser.add_argument("--seed", type=int, default=0, help="which reviews are the new ones")
    parser.add_argument(
        "--warm", action="append", default=None, help="LR:EPOCHS of a warm start (repeatable)"
    )
    args = parser.parse_args()
    config = PipelineConfig.load(
        None, {"ingest.text_columns": [args.text_column], "ingest.rating_column": None}
    )
    warm_settings = [
        (float(lr), int(epochs)) for lr, epochs in (item.split(":") for item in args.warm or [])
    ] or [(config.train.warm_learning_rate, config.train.warm_epochs)]
    max_len = config.train.max_len
    rows = []
    with tempfile.TemporaryDirectory(prefix="reviewgru-warm-bench-") as tmp:
        work = Path(tmp)
        grown_path, base_path = corpora(args, config, work)
        base = tokenize_snapshot(base_path, config.tokenizer, work / "base")
        grown = tokenize_snapshot(grown_path, config.tokenizer, work / "grown")

        def fit(
            name: str, data: TokenizedData, train_cfg: TrainConfig, warm: WarmStart | None
        ) -> None:
            started, epochs = time.perf_counter(), EpochSeconds()
            trained = train_model(
                data, config.model, train_cfg, work / name, [epochs],
                initial_weights=warm.apply if warm else None,
            )  # fmt: skip
            wall = time.perf_counter() - started
            ppl = test_perplexity(trained, grown, max_len) if data is grown else None
            rows.append({"run": name, "seconds": round(wall, 1), "epochs": trained.epochs_run,
                         "best_epoch": trained.best_epoch, "test_perplexity": ppl,
                         "first_epoch_seconds": round(epochs.seconds[0], 1)})  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)

        fit("champion (scratch, base corpus)", base, config.train, None)
        champion_path = work / "champion (scratch, base corpus)" / "model.keras"
        fit("scratch retrain (grown)", grown, config.train, None)
        champion = load_language_model(champion_path)
        old_vocab, new_vocab = Vocab.load(base.vocab_path), Vocab.load(grown.vocab_path)
        for lr, epochs in warm_settings:
            warm = WarmStart.from_champion("1", champion, old_vocab, new_vocab)
            train_cfg = warm_train_config(
                config.train.model_copy(update={"warm_learning_rate": lr, "warm_epochs": epochs})
            )
            print(warm.description(), flush=True)
            fit(f"warm start lr {lr:g}, ≤{epochs} epochs (grown)", grown, train_cfg, warm)
    scratch = rows[1]
    print(f"\nvocabulary {len(old_vocab)} → {len(new_vocab)}; grown corpus train tokens "
          f"{grown.tokens['train']}, test tokens {grown.tokens['test']}")  # fmt: skip
    print("| run | wall s (1st epoch) | epochs (best) | test perplexity | time vs scratch "
          "| ppl vs scratch |")  # fmt: skip
    print("|---|---:|---|---:|---:|---:|")
    for row in rows:
        ppl = row["test_perplexity"]
        time_share = f"{row['seconds'] / scratch['seconds']:.0%}" if row is not rows[0] else "-"
        change = f"{ppl / scratch['test_perplexity'] - 1:+.2%}" if ppl is not None else "-"
        wall = f"{row['seconds']:.0f} ({row['first_epoch_seconds']:.0f})"
        print(f"| {row['run']} | {wall} | {row['epochs']} ({row['best_epoch']}) | "
              f"{'-' if ppl is None else f'{ppl:.2f}'} | {time_share} | {change} |")  # fmt: skip


if __name__ == "__main__":
    main()
