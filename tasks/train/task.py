"""The train stage as a Prefect task: the progress bar and epoch table, metrics and the curve."""

from __future__ import annotations

import time
from typing import Any

import keras
from prefect import task

from tasks import tracking
from tasks.config import PipelineConfig
from tasks.records import Champion, TokenizedData, TrainedModel
from tasks.train.fit import learning_curve_png, train_model
from tasks.train.progress import (
    EPOCHS_KEY,
    PROGRESS_KEY,
    EpochMetricsToMlflow,
    epoch_row,
    markdown_table,
)
from tasks.train.warm_start import init_plan


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


@task(name="train")
def train_task(
    data: TokenizedData, config: PipelineConfig, run_id: str | None, champion: Champion | None
) -> TrainedModel:
    """`train_model` logged to the MLflow run `run_id`, warm-started from `champion` when
    `train.init` says so; run_id None: a multi-worker process that is not the chief, which trains
    its share and logs nothing."""
    plan = init_plan(config.train, config.model, data, champion)
    if run_id is not None:
        tracking.set_tags(run_id, plan.tags())
    train_cfg = plan.train_config(config.train)
    out_dir = (
        config.workdir
        / "models"
        / f"{data.digest[:16]}-{config.digest('model', 'train')}{plan.out_dir_suffix()}"
    )
    # Every target token but each review's first (tasks/train/windows.py), for tokens/s per epoch.
    targets = data.tokens["train"] - data.reviews["train"]
    progress = PrefectTrainingProgress(train_cfg.epochs, targets)
    callbacks = [EpochMetricsToMlflow(run_id), progress] if run_id else [progress]
    trained = train_model(
        data, config.model, train_cfg, out_dir, callbacks,
        collective_timeout_s=config.runner.collective_timeout_s,
        initial_weights=plan.warm.apply if plan.warm else None,
    ).model_copy(update={"init": plan.tags()})  # fmt: skip
    if run_id is None:
        return trained
    tracking.log_metrics(
        run_id,
        {
            "train_tokens_per_s": trained.tokens_per_s,
            "train_seconds": trained.train_seconds,
            "padding_fraction": trained.padding_fraction,
            "epochs_run": trained.epochs_run,
            "best_epoch": trained.best_epoch,
            "resumed_from_epoch": trained.resumed_from_epoch,
        },
    )
    curve = learning_curve_png(
        trained.history, trained.resumed_from_epoch + 1, out_dir / "learning_curve.png"
    )
    tracking.log_artifact(run_id, curve)
    return trained
