"""The train stage: tf.data pipelines over the windows, and the fit of the GRU model."""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from prefect import task

from tasks import tracking
from tasks.config import ModelConfig, PipelineConfig, TrainConfig
from tasks.model import build_language_model
from tasks.records import TokenizedData, TrainedModel
from tasks.windows import load_windows

logger = logging.getLogger(__name__)

# XLA compiles the GRU's while_loop and the loss together. Measured on this 2-core CPU at the seed
# sizes (vocab 10000, emb 64, GRU 64, batch 32, max_len 40, random ids, steady-state epochs):
# 13-20 k target tokens/s with jit_compile=True vs 8.8-9.3 k with False.
JIT_COMPILE = True


def make_dataset(
    x: np.ndarray, y: np.ndarray, batch_size: int, shuffle: bool, seed: int
) -> tf.data.Dataset:
    """Batches of (x, y, sample_weight = (y != 0)): padding targets count for nothing."""
    dataset = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle:
        dataset = dataset.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size).map(
        lambda xb, yb: (xb, yb, tf.cast(tf.not_equal(yb, 0), tf.float32)),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    return dataset.prefetch(tf.data.AUTOTUNE)


def train_model(
    data: TokenizedData,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    out_dir: Path,
    callbacks: list[keras.callbacks.Callback] | None = None,
) -> TrainedModel:
    """Fit the GRU model on the train split, early-stopped on the val split; save model.keras.

    Raises:
        ValueError: the train or val split yields no windows (no review has two tokens).
        RuntimeError: the loss became NaN or infinite.
    """
    x_train, y_train = load_windows(data.split_path("train"), train_cfg.max_len)
    x_val, y_val = load_windows(data.split_path("val"), train_cfg.max_len)
    for split, x in (("train", x_train), ("val", x_val)):
        if len(x) == 0:
            raise ValueError(
                f"{data.split_path(split)} yields no training windows: every review has fewer "
                "than 2 tokens; provide more data or a larger val_fraction"
            )
    train_targets = int(np.count_nonzero(y_train))
    padding_fraction = 1.0 - train_targets / y_train.size
    logger.info(
        "train: %d windows, %d targets, %.1f%% padding; val: %d windows",
        len(x_train),
        train_targets,
        100 * padding_fraction,
        len(x_val),
    )

    keras.utils.set_random_seed(train_cfg.seed)
    model = build_language_model(data.vocab_size, model_cfg.embedding_dim, model_cfg.units)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=train_cfg.learning_rate),
        # Divide by the number of real targets, not B×T, so exp(loss) is the per-token perplexity.
        loss=keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, reduction="mean_with_sample_weight"
        ),
        weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile=JIT_COMPILE,
    )
    fit_callbacks = [
        keras.callbacks.TerminateOnNaN(raise_error=True),
        keras.callbacks.EarlyStopping(
            monitor="val_loss",
            patience=train_cfg.early_stopping_patience,
            restore_best_weights=True,
            start_from_epoch=train_cfg.early_stopping_from_epoch,
        ),
        *(callbacks or []),
    ]
    seed = train_cfg.seed
    started = time.perf_counter()
    fitted = model.fit(
        make_dataset(x_train, y_train, train_cfg.batch_size, shuffle=True, seed=seed),
        validation_data=make_dataset(x_val, y_val, train_cfg.batch_size, shuffle=False, seed=seed),
        epochs=train_cfg.epochs,
        shuffle=False,  # the training dataset shuffles itself, seeded
        callbacks=fit_callbacks,
        verbose=1 if sys.stderr.isatty() else 2,
    )
    train_seconds = time.perf_counter() - started

    history = {key: [float(v) for v in values] for key, values in fitted.history.items()}
    for key in ("loss", "val_loss"):
        # exp of a diverged (huge but finite) loss is inf, not an OverflowError.
        with np.errstate(over="ignore"):
            history[key.replace("loss", "perplexity")] = np.exp(history[key]).tolist()
    epochs_run = len(history["loss"])

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "model.keras"
    tmp = out_dir / f".model-{os.getpid()}.tmp.keras"
    try:
        model.save(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)

    trained = TrainedModel(
        path=path,
        epochs_run=epochs_run,
        best_epoch=int(np.argmin(history["val_loss"])) + 1,
        history=history,
        train_seconds=train_seconds,
        tokens_per_s=train_targets * epochs_run / train_seconds,
        padding_fraction=padding_fraction,
    )
    logger.info(
        "trained %d epochs (best %d, val perplexity %.1f) in %.1f s, %.0f tokens/s",
        epochs_run,
        trained.best_epoch,
        history["val_perplexity"][trained.best_epoch - 1],
        train_seconds,
        trained.tokens_per_s,
    )
    return trained


def _learning_curve_png(history: dict[str, list[float]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = range(1, len(history["loss"]) + 1)
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, key in zip(axes, ("perplexity", "accuracy"), strict=True):
        axis.plot(epochs, history[key], marker="o", label=f"train {key}")
        axis.plot(epochs, history[f"val_{key}"], marker="o", label=f"val {key}")
        axis.set_xlabel("epoch")
        axis.set_title(key)
        axis.legend()
    axes[0].set_yscale("log")
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path


@task(name="train")
def train_task(data: TokenizedData, config: PipelineConfig, run_id: str) -> TrainedModel:
    out_dir = config.workdir / "models" / f"{data.digest[:16]}-{config.digest('model', 'train')}"
    trained = train_model(
        data, config.model, config.train, out_dir, [tracking.EpochMetricsToMlflow(run_id)]
    )
    tracking.log_metrics(
        run_id,
        {
            "train_tokens_per_s": trained.tokens_per_s,
            "train_seconds": trained.train_seconds,
            "padding_fraction": trained.padding_fraction,
            "epochs_run": trained.epochs_run,
            "best_epoch": trained.best_epoch,
        },
    )
    curve = _learning_curve_png(trained.history, out_dir / "learning_curve.png")
    tracking.log_artifact(run_id, curve)
    return trained
