"""The train stage: tf.data pipelines over the windows, and the fit of the GRU model."""

from __future__ import annotations

import json
import logging
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tasks.config import ModelConfig, RunnerConfig, TrainConfig
from tasks.files import atomic_path
from tasks.records import TokenizedData, TrainedModel
from tasks.train import distributed
from tasks.train.disk_space import RoomForBackup, ensure_room_for
from tasks.train.fused_softmax import FusedSoftmaxTraining, resolve_precision
from tasks.train.model import build_language_model
from tasks.train.sampled_softmax import SampledSoftmaxTraining
from tasks.train.softmax_loss import SoftmaxCrossEntropy, TopOneAccuracy
from tasks.train.windows import (
    batches_per_width,
    bucket_widths,
    computed_positions,
    load_windows,
)

logger = logging.getLogger(__name__)

# XLA compiles the GRU's while_loop and the loss together. Measured on this 2-core CPU at the seed
# sizes (vocab 10000, emb 64, GRU 64, batch 32, max_len 40, random ids, steady-state epochs):
# 13-20 k target tokens/s with jit_compile=True vs 8.8-9.3 k with False.
JIT_COMPILE = True

# BackupAndRestore's file names in its backup_dir (keras/src/callbacks/backup_and_restore.py).
BACKUP_METADATA = "training_metadata.json"
BACKUP_WEIGHTS = "latest.weights.h5"


def make_dataset(
    x: np.ndarray, y: np.ndarray, batch_size: int, shuffle: bool, seed: int, buckets: int = 1
) -> tf.data.Dataset:
    """Batches of (x, y, sample_weight): padding targets weigh 0, real ones batches / targets.

    With that constant weight and the loss summed per batch (`compile_for_training`), Keras'
    epoch loss, a mean over equally sized batches, is exactly the mean over every real target:
    a batch of short windows counts for its few targets, not as much as a batch of long ones.

    With `buckets` > 1 a batch holds windows of one bucket width (`bucket_widths`) and is cut to
    it: a batch of short windows computes no max_len-wide padding. Batches leave in the order
    their bucket fills, which the seeded shuffle decides. A bucket's last batch is filled up with
    all-padding rows (weight 0): every batch of a width has one shape, which XLA compiles once.
    tf.data's autotuning is off: it stalled some epochs by seconds here, and this pipeline only
    slices arrays."""
    widths = bucket_widths(y, buckets)
    dataset = tf.data.Dataset.from_tensor_slices((x, y, widths))
    if shuffle:
        dataset = dataset.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.group_by_window(
        key_func=lambda xw, yw, width: tf.cast(width, tf.int64),
        reduce_func=lambda _, windows: windows.batch(batch_size),
        window_size=batch_size,
    )

    # A count Keras cannot infer through group_by_window: one partial batch per width.
    batches = int(batches_per_width(widths, batch_size)[1].sum())
    target_weight = batches / max(int(np.count_nonzero(y)), 1)

    def cut_fill_and_weigh(xb: tf.Tensor, yb: tf.Tensor, width: tf.Tensor) -> tuple[tf.Tensor, ...]:
        fill = [[0, batch_size - tf.shape(xb)[0]], [0, 0]]
        xb, yb = tf.pad(xb[:, : width[0]], fill), tf.pad(yb[:, : width[0]], fill)
        return xb, yb, tf.cast(tf.not_equal(yb, 0), tf.float32) * target_weight

    dataset = dataset.map(cut_fill_and_weigh)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(batches)).prefetch(2)
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


class TrainPhaseClock(keras.callbacks.Callback):
    """Seconds of each epoch's training phase: from its start to validation (or its end).

    Tokens per second at the median of these after the first epoch (which compiles; it counts
    only when it is the one epoch run) is what benchmarks/train.py measures: validation and XLA
    compiling are not training throughput."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []
        self._started: float | None = None

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._started = time.perf_counter()

    def on_test_begin(self, logs: dict | None = None) -> None:
        self._stop()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._stop()

    def _stop(self) -> None:
        if self._started is not None:  # validation inside fit, not a separate evaluate
            self.seconds.append(time.perf_counter() - self._started)
            self._started = None


def distribution_strategy(name: str) -> tf.distribute.Strategy:
    """mirrored: every local GPU (one CPU replica without one); multiworker: the cluster in
    TF_CONFIG (`fit` with one worker; more train in `tasks.train.distributed`); default: none."""
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def make_optimizer(train_cfg: TrainConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """Adam, or AdamW with `weight_decay`; the learning rate warms up linearly over
    `warmup_epochs`, then stays (constant) or follows a cosine to 0 at `epochs` (cosine)."""
    rate: float | keras.optimizers.schedules.LearningRateSchedule = train_cfg.learning_rate
    warmup = train_cfg.warmup_epochs * steps_per_epoch
    if warmup or train_cfg.lr_schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0 if warmup else train_cfg.learning_rate,
            decay_steps=max(train_cfg.epochs * steps_per_epoch - warmup, 1),
            alpha=1.0 if train_cfg.lr_schedule == "constant" else 0.0,  # 1: no decay
            warmup_target=train_cfg.learning_rate if warmup else None,
            warmup_steps=warmup,
        )
    if train_cfg.weight_decay:
        return keras.optimizers.AdamW(
            learning_rate=rate, weight_decay=train_cfg.weight_decay, clipnorm=train_cfg.clipnorm
        )
    return keras.optimizers.Adam(learning_rate=rate, clipnorm=train_cfg.clipnorm)


def configured_model(vocab_size: int, model_cfg: ModelConfig) -> keras.Model:
    """`build_language_model` with the model section of the config."""
    return build_language_model(
        vocab_size,
        model_cfg.embedding_dim,
        model_cfg.units,
        dropout=model_cfg.dropout,
        tie_embeddings=model_cfg.tie_embeddings,
        embedding_init=model_cfg.embedding_init,
    )


def compile_for_training(
    model: keras.Model,
    train_cfg: TrainConfig,
    steps_per_execution: int = 1,
    steps_per_epoch: int = 1,
    fused: bool = True,
) -> keras.Model:
    """`model` compiled for training: the exact loss from logits through the fused output layer
    (`tasks.train.fused_softmax`, products in `train_cfg.precision`), or a sampled-softmax trainer
    around it. Validation and metrics are the exact ones either way. `fused=False`: the plain
    layers with the loss from `tasks.train.softmax_loss` (the previous design, a benchmark row).
    `steps_per_epoch` paces the learning-rate schedule. (`steps_per_execution` > 1 is a lever
    benchmarks/train.py measures; it did not pay.)"""
    fitted = model
    if train_cfg.loss == "sampled":
        fitted = SampledSoftmaxTraining(model, train_cfg.sampled_negatives)
    elif fused:
        precision = resolve_precision(train_cfg.precision)
        logger.info("fused output layer, %s products", precision)
        fitted = FusedSoftmaxTraining(model, bf16=precision == "bf16")
    own_loss = isinstance(fitted, FusedSoftmaxTraining)  # it computes and logs loss itself
    fitted.compile(
        optimizer=make_optimizer(train_cfg, steps_per_epoch),
        # Summed with make_dataset's weights: the epoch loss is the mean over real targets, so
        # exp(loss) is the per-token perplexity. (The fused trainer sums the same way.)
        loss=None if own_loss else SoftmaxCrossEntropy(reduction="sum"),
        weighted_metrics=None if own_loss else [TopOneAccuracy()],
        # XLA has no kernel for the candidate sampler of the sampled loss.
        jit_compile=JIT_COMPILE and train_cfg.loss == "exact",
        steps_per_execution=steps_per_execution,
    )
    if own_loss:
        # The saved model.keras stays what it was: compiled with this loss and metric and the
        # trainer's optimizer (its state included).
        model.compile(
            optimizer=fitted.optimizer,
            loss=SoftmaxCrossEntropy(reduction="sum"),
            weighted_metrics=[TopOneAccuracy()],
            jit_compile=JIT_COMPILE,
        )
    if fitted is not model:
        # Build the trainer and its exact validation metrics: BackupAndRestore needs a built
        # model, and the end-of-epoch logs read every metric.
        dummy = np.zeros((1, 2), np.int32)
        fitted.evaluate(dummy, dummy, verbose=0)
    return fitted


def stopping_callbacks(train_cfg: TrainConfig) -> list[keras.callbacks.Callback]:
    """A NaN or Inf loss fails the fit; early stopping on the val loss restores the best epoch."""
    return [
        keras.callbacks.TerminateOnNaN(raise_error=True),
        keras.callbacks.EarlyStopping(
            monitor="val_loss",
            patience=train_cfg.early_stopping_patience,
            restore_best_weights=True,
            start_from_epoch=train_cfg.early_stopping_from_epoch,
        ),
    ]


def train_model(
    data: TokenizedData,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    out_dir: Path,
    callbacks: list[keras.callbacks.Callback] | None = None,
    *,
    collective_timeout_s: float = RunnerConfig().collective_timeout_s,
    initial_weights: Callable[[keras.Model], None] | None = None,
) -> TrainedModel:
    """Fit the GRU model on the train split, early-stopped on the val split; save model.keras.

    `initial_weights` sets a freshly built model's weights before compiling (a warm start,
    `tasks/train/warm_start.py`); a resumed fit then loads its backup over them.

    After every epoch the weights and optimizer state are backed up in ``out_dir/backup``; a fit
    killed part way resumes from its last finished epoch when called again with the same
    `out_dir` (keyed on data and config by the caller); a successful fit deletes the backup.
    Early stopping's best weights are not in the backup: a resumed fit restores the best epoch
    among those it ran itself.

    Raises:
        ValueError: the train or val split yields no windows (no review has two tokens).
        RuntimeError: the loss became NaN or infinite.
    """
    if distributed.trains_across_workers(train_cfg):  # Keras' fit cannot: our own loop
        return distributed.train_across_workers(
            data, model_cfg, train_cfg, out_dir, callbacks or [], collective_timeout_s
        )
    x_train, y_train = load_windows(data.split_path("train"), train_cfg.max_len)
    x_val, y_val = load_windows(data.split_path("val"), train_cfg.max_len)
    for split, x in (("train", x_train), ("val", x_val)):
        if len(x) == 0:
            raise ValueError(
                f"{data.split_path(split)} yields no training windows: every review has fewer "
                "than 2 tokens; provide more data or a larger val_fraction"
            )
    train_targets = int(np.count_nonzero(y_train))
    computed = computed_positions(y_train, train_cfg.batch_size, train_cfg.buckets)
    padding_fraction = 1.0 - train_targets / computed
    logger.info(
        "train: %d windows, %d targets, %.1f%% padding; val: %d windows",
        len(x_train),
        train_targets,
        100 * padding_fraction,
        len(x_val),
    )

    seed, batch, buckets = train_cfg.seed, train_cfg.batch_size, train_cfg.buckets
    train_set = make_dataset(x_train, y_train, batch, shuffle=True, seed=seed, buckets=buckets)
    steps_per_epoch = int(train_set.cardinality())

    def new_models() -> tuple[keras.Model, keras.Model]:
        keras.utils.set_random_seed(train_cfg.seed)
        with distribution_strategy(train_cfg.strategy).scope():
            model = configured_model(data.vocab_size, model_cfg)
            if initial_weights is not None:
                initial_weights(model)
            return model, compile_for_training(model, train_cfg, steps_per_epoch=steps_per_epoch)

    backup_dir = out_dir / "backup"
    resumed_from_epoch = _resumable_epoch(backup_dir, new_models, train_cfg.epochs)
    if resumed_from_epoch:
        logger.info("resuming from epoch %d (backup in %s)", resumed_from_epoch, backup_dir)
    model, fitted_model = new_models()
    clock = TrainPhaseClock()
    fit_callbacks = [
        clock,
        RoomForBackup(backup_dir),  # before BackupAndRestore: h5py crashes on a full disk
        # Restores the epoch, the weights and the optimizer state. TerminateOnNaN raising skips
        # on_train_end, so a failed fit keeps its backup.
        keras.callbacks.BackupAndRestore(str(backup_dir)),
        *stopping_callbacks(train_cfg),
        *(callbacks or []),
    ]
    started = time.perf_counter()
    fitted = fitted_model.fit(
        train_set,
        validation_data=make_dataset(
            x_val, y_val, batch, shuffle=False, seed=seed, buckets=buckets
        ),
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
    epochs_here = len(history["loss"])  # the history holds only the epochs after a resume

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "model.keras"
    with atomic_path(path, ".tmp.keras") as tmp:  # Keras picks the format by the extension
        ensure_room_for(model, out_dir, copies=1)
        model.save(tmp)

    best_here = int(np.argmin(history["val_loss"]))
    trained = TrainedModel(
        path=path,
        epochs_run=resumed_from_epoch + epochs_here,
        best_epoch=resumed_from_epoch + best_here + 1,
        history=history,
        train_seconds=train_seconds,
        tokens_per_s=train_targets / float(np.median(clock.seconds[1:] or clock.seconds)),
        padding_fraction=padding_fraction,
        resumed_from_epoch=resumed_from_epoch,
    )
    logger.info(
        "trained %d epochs (best %d, val perplexity %.1f) in %.1f s, %.0f tokens/s",
        trained.epochs_run,
        trained.best_epoch,
        history["val_perplexity"][best_here],
        train_seconds,
        trained.tokens_per_s,
    )
    return trained


def _resumable_epoch(
    backup_dir: Path, new_models: Callable[[], tuple[keras.Model, keras.Model]], epochs: int
) -> int:
    """The epochs finished in the backup in `backup_dir`, 0 without one; deletes a corrupt one.

    BackupAndRestore falls back only on OSError, and then only to a previous backup: a truncated
    metadata JSON, truncated weights or weights of another architecture (model code changed under
    the same config) would fail every retry. Loading into a throwaway model proves the backup loads.
    """
    if not backup_dir.exists():
        return 0
    try:
        return _backup_epoch(backup_dir, new_models()[1], epochs)
    except Exception as error:  # whatever fails to load here would fail BackupAndRestore too
        reason = f"{type(error).__name__}: {next(iter(str(error).splitlines()), '')}"
        logger.warning("backup in %s is corrupt (%s); training starts over", backup_dir, reason)
        shutil.rmtree(backup_dir)
        return 0


def _backup_epoch(backup_dir: Path, fitted_model: keras.Model, epochs: int) -> int:
    epoch = json.loads((backup_dir / BACKUP_METADATA).read_text())["epoch"]
    # 0: no epoch finished; `epochs`: the fit ended but died before deleting its backup.
    if type(epoch) is not int or not 0 < epoch < epochs:
        raise ValueError(f"{BACKUP_METADATA} says epoch {epoch!r}, not one of 1..{epochs - 1}")
    with fitted_model.distribute_strategy.scope():  # as BackupAndRestore loads inside fit
        fitted_model.optimizer.build(fitted_model.trainable_variables)
        fitted_model.load_weights(backup_dir / BACKUP_WEIGHTS)
    return epoch


def learning_curve_png(history: dict[str, list[float]], first_epoch: int, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = range(first_epoch, first_epoch + len(history["loss"]))
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, key in zip(axes, ("perplexity", "accuracy"), strict=True):
        if key in history:  # no train accuracy with --loss sampled
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
