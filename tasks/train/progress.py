"""Training progress while the fit runs: per-epoch metrics to MLflow, and in the Prefect UI a bar
and a per-epoch table. (Keras callbacks live here, not in tasks/tracking.py, so that commands
that only read the registry do not import Keras.)

The progress artifact (`reviewgru-training-progress`) is updated after every epoch; its
description is the epoch table so far (loss, val perplexity, tokens/s, ETA) in Markdown, so the
run page shows both live. At the end the table is also a table artifact (`reviewgru-epochs`).
"""

from __future__ import annotations

import math
import time
from typing import Any

import keras

from tasks import tracking

PROGRESS_KEY = "reviewgru-training-progress"
EPOCHS_KEY = "reviewgru-epochs"
COLUMNS = ("epoch", "loss", "val perplexity", "tokens/s", "epoch s", "ETA")


def epoch_row(
    epoch: int,
    epochs: int,
    logs: dict[str, float],
    train_targets: int,
    train_seconds: float,
    epoch_seconds: list[float],
) -> dict[str, str]:
    """One epoch's row; the ETA is the mean epoch time so far times the epochs left (an upper
    bound: early stopping may end sooner)."""
    left = epochs - epoch
    eta = left * sum(epoch_seconds) / len(epoch_seconds)
    val_loss = logs.get("val_loss")
    return {
        "epoch": f"{epoch}/{epochs}",
        "loss": f"{logs.get('loss', math.nan):.4f}",
        "val perplexity": "-" if val_loss is None else f"{math.exp(min(val_loss, 700.0)):.3f}",
        "tokens/s": f"{train_targets / train_seconds:.0f}" if train_seconds > 0 else "-",
        "epoch s": f"{epoch_seconds[-1]:.1f}",
        "ETA": "done" if left == 0 else f"≤ {_duration(eta)}",
    }


def markdown_table(rows: list[dict[str, str]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row[c] for c in COLUMNS) + " |" for row in rows]
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


class PrefectTrainingProgress(keras.callbacks.Callback):
    """Keras callback: the Prefect progress artifact and epoch table, updated every epoch.

    Must run inside a Prefect task run (artifacts attach to it). `train_targets` are the real
    target tokens of one training epoch, for tokens/s over the training phase (validation out).
    """

    def __init__(self, epochs: int, train_targets: int) -> None:
        super().__init__()
        self.epochs, self.train_targets = epochs, train_targets
        self.rows: list[dict[str, str]] = []
        self._epoch_seconds: list[float] = []
        self._artifact: Any = None
        self._started = self._train_started = 0.0
        self._train_seconds: float | None = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        from prefect.artifacts import create_progress_artifact

        self._artifact = create_progress_artifact(
            0.0, key=PROGRESS_KEY, description=f"training: epoch 1 of at most {self.epochs}"
        )

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._started = self._train_started = time.perf_counter()
        self._train_seconds = None

    def on_test_begin(self, logs: dict | None = None) -> None:
        if self._train_seconds is None:  # validation inside fit: the training phase ends
            self._train_seconds = time.perf_counter() - self._train_started

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        from prefect.artifacts import update_progress_artifact

        now = time.perf_counter()
        self._epoch_seconds.append(now - self._started)
        train_seconds = self._train_seconds or now - self._train_started
        row = epoch_row(epoch + 1, self.epochs, dict(logs or {}), self.train_targets,
                        train_seconds, self._epoch_seconds)  # fmt: skip
        self.rows.append(row)
        description = f"training epoch {row['epoch']}\n\n{markdown_table(self.rows)}"
        update_progress_artifact(self._artifact, 100.0 * (epoch + 1) / self.epochs, description)

    def on_train_end(self, logs: dict | None = None) -> None:
        from prefect.artifacts import create_table_artifact, update_progress_artifact

        if not self.rows:
            return
        done = f"training done after {self.rows[-1]['epoch'].split('/')[0]} epochs"
        update_progress_artifact(self._artifact, 100.0, f"{done}\n\n{markdown_table(self.rows)}")
        create_table_artifact(key=EPOCHS_KEY, table=self.rows, description=done)


class EpochMetricsToMlflow(keras.callbacks.Callback):
    """Logs every metric Keras reports at the end of an epoch, with perplexities, step = epoch."""

    def __init__(self, run_id: str) -> None:
        super().__init__()
        self.run_id = run_id

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        metrics = {key: float(value) for key, value in (logs or {}).items()}
        for loss_key in ("loss", "val_loss"):
            if loss_key in metrics:
                prefix = "val_" if loss_key.startswith("val_") else ""
                metrics[f"{prefix}perplexity"] = min(math.exp(min(metrics[loss_key], 700.0)), 1e30)
        tracking.log_metrics(self.run_id, metrics, step=epoch + 1)
