"""Training progress while the fit runs: per-epoch metrics to MLflow, and the rows of the epoch
table the Prefect UI shows (the Prefect callback itself is in `task.py`). (Keras callbacks live
here, not in tasks/tracking.py, so that commands that only read the registry do not import Keras.)

The progress artifact (`reviewgru-training-progress`) is updated after every epoch; its
description is the epoch table so far (loss, val perplexity, tokens/s, ETA) in Markdown, so the
run page shows both live. At the end the table is also a table artifact (`reviewgru-epochs`).
"""

from __future__ import annotations

import math

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
