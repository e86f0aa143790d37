"""Training across processes: MultiWorkerMirroredStrategy with a training loop of our own.

Keras 3's `fit` cannot run under MultiWorkerMirroredStrategy with more than one worker (its
first step reduces a batch eagerly across workers, keras-team/keras#20585, and its metric
reduction fails after that), so `--strategy multiworker` with several workers in TF_CONFIG trains
here instead. Every worker builds the same seeded global batches (`batch_size` rows) and computes
only its slice of each, `batch_size / workers` rows (tf.data's sharding by DATA does the same:
every worker reads the split, each keeps its part). Each worker's loss is the weighted sum of
`make_dataset` over its rows and Keras' optimizer sums the gradients over the workers, so a step
applies exactly the gradient one process computes on the whole global batch. Validation sums are
reduced over the workers; early stopping decides on the same numbers everywhere. The chief (task
type chief, else worker 0) writes the backup and model.keras; every worker reads the backup.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
from tensorflow.python.eager import context

from tasks.config import ModelConfig, TrainConfig
from tasks.records import InputError, TokenizedData, TrainedModel
from tasks.train.disk_space import ensure_room_for
from tasks.train.fused_softmax import (
    fused_softmax_cross_entropy,
    output_inputs,
    output_weights,
    resolve_precision,
)
from tasks.train.softmax_loss import SoftmaxCrossEntropy, TopOneAccuracy, softmax_cross_entropy

logger = logging.getLogger(__name__)

SUM = tf.distribute.ReduceOp.SUM
# A day: in effect no heartbeat timeout (see `multiworker_strategy`).
HEARTBEAT_TIMEOUT_MS = 24 * 3600 * 1000
# What a collective raises when a worker died or stopped answering (or the timeout passed).
LOST_WORKER_ERRORS = (
    tf.errors.UnavailableError,
    tf.errors.DeadlineExceededError,
    tf.errors.CancelledError,
    tf.errors.AbortedError,
    tf.errors.InternalError,
)


def tf_config() -> dict:
    """The TF_CONFIG environment variable as a dict ({} without one)."""
    try:
        parsed = json.loads(os.environ.get("TF_CONFIG") or "{}")
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        raise InputError("TF_CONFIG is not a JSON object; see README, Scaling out")
    return parsed


def cluster_workers() -> int:
    """Tasks of the cluster in TF_CONFIG (1 without one)."""
    return max(1, sum(len(tasks) for tasks in tf_config().get("cluster", {}).values()))


def is_chief() -> bool:
    """Whether this process writes the MLflow run and registers: the chief task, or worker 0
    when the cluster has no chief, or any process without a cluster in TF_CONFIG."""
    config = tf_config()
    task, cluster = config.get("task", {}), config.get("cluster", {})
    if cluster_workers() == 1:
        return True
    if "chief" in cluster:
        return task.get("type") == "chief"
    return task.get("type") == "worker" and int(task.get("index", 0)) == 0


def trains_across_workers(train_cfg: TrainConfig) -> bool:
    return train_cfg.strategy == "multiworker" and cluster_workers() > 1


def worker_index() -> int:
    """This process's place among the cluster's workers: the chief first, then the workers in
    TF_CONFIG's order (MultiWorkerMirroredStrategy numbers them so too)."""
    config = tf_config()
    task, cluster = config.get("task", {}), config.get("cluster", {})
    index = int(task.get("index", 0))
    if task.get("type") == "chief":
        return index
    return index + len(cluster.get("chief", []))


def trains_as_worker(train_cfg: TrainConfig) -> bool:
    """A multi-worker process that is not the chief: it trains its share and nothing else."""
    return trains_across_workers(train_cfg) and not is_chief()


def multiworker_strategy(timeout_s: float) -> tf.distribute.MultiWorkerMirroredStrategy:
    """The strategy over TF_CONFIG's cluster; a collective waiting longer than `timeout_s` for
    a worker fails the run instead of hanging."""
    cluster = tf_config().get("cluster", {})
    coordinated = [job for job in ("chief", "worker") if job in cluster]
    # The strategy's own coordination service aborts the chief when a worker that finished
    # training exits (its heartbeats stop) while the chief evaluates and registers: seen here.
    # Configured first, with heartbeats that never time out; a worker dying mid-training fails
    # the next collective instead (a refused connection, or `timeout_s`).
    context.context().configure_coordination_service(
        service_type="standalone",
        service_leader=f"/job:{coordinated[0]}/replica:0/task:0",
        enable_health_check=False,
        heartbeat_timeout_in_ms=HEARTBEAT_TIMEOUT_MS,
        coordinated_jobs=[
            coordination_config_pb2.CoordinatedJob(name=job, num_tasks=len(cluster[job]))
            for job in coordinated
        ],
    )
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=timeout_s)
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)


class WorkerLost(RuntimeError):
    """A collective failed or timed out: a worker died or stopped answering."""


def train_across_workers(
    data: TokenizedData,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    out_dir: Path,
    callbacks: list[keras.callbacks.Callback],
    timeout_s: float,
) -> TrainedModel:
    """`tasks.train.fit.train_model` for a cluster of workers (see the module docstring)."""
    from tasks.train.fit import (
        BACKUP_METADATA,
        BACKUP_WEIGHTS,
        JIT_COMPILE,
        configured_model,
        make_dataset,
        make_optimizer,
        stopping_callbacks,
    )
    from tasks.train.windows import computed_positions, load_windows

    workers = cluster_workers()
    if train_cfg.loss != "exact":
        raise InputError("--strategy multiworker trains with --loss exact only")
    if train_cfg.batch_size % workers:
        raise InputError(
            f"--batch-size {train_cfg.batch_size} does not split evenly over the {workers} "
            "workers in TF_CONFIG: make it a multiple of the number of workers"
        )
    strategy = multiworker_strategy(timeout_s)
    if strategy.num_replicas_in_sync != workers:
        raise InputError(
            f"{strategy.num_replicas_in_sync} replicas over {workers} workers: multi-worker "
            "training takes one replica (CPU or GPU) per worker"
        )
    chief = is_chief()
    rows = train_cfg.batch_size // workers
    x_train, y_train = load_windows(data.split_path("train"), train_cfg.max_len)
    x_val, y_val = load_windows(data.split_path("val"), train_cfg.max_len)
    if len(x_train) == 0 or len(x_val) == 0:
        raise ValueError(f"{data.split_path('train')} or its val split yields no windows")
    train_targets = int(np.count_nonzero(y_train))
    padding_fraction = 1.0 - train_targets / computed_positions(
        y_train, train_cfg.batch_size, train_cfg.buckets
    )

    index = worker_index()

    def this_workers_rows(x: np.ndarray, y: np.ndarray, shuffle: bool) -> tf.data.Dataset:
        """The global batches, cut to this worker's `rows` of every one."""
        batches = make_dataset(
            x, y, train_cfg.batch_size, shuffle, train_cfg.seed, train_cfg.buckets
        )
        part = slice(index * rows, (index + 1) * rows)
        return batches.map(lambda xb, yb, wb: (xb[part], yb[part], wb[part]))

    keras.utils.set_random_seed(train_cfg.seed)  # the same global batch order on every worker
    train_set = this_workers_rows(x_train, y_train, shuffle=True)
    val_set = this_workers_rows(x_val, y_val, shuffle=False)
    steps, val_steps = int(train_set.cardinality()), int(val_set.cardinality())
    logger.info(
        "multi-worker training: %d workers, global batch %d = %d rows per worker, %s",
        workers,
        train_cfg.batch_size,
        rows,
        "chief" if chief else "not the chief",
    )

    with strategy.scope():
        model = configured_model(data.vocab_size, model_cfg)
        optimizer = make_optimizer(train_cfg, steps)
        # Compiled as the single-process trainer leaves it: model.keras and the backup carry
        # the optimizer (its state included).
        model.compile(
            optimizer=optimizer,
            loss=SoftmaxCrossEntropy(reduction="sum"),
            weighted_metrics=[TopOneAccuracy()],
            jit_compile=JIT_COMPILE,
        )
        optimizer.build(model.trainable_variables)
    hidden_states = keras.Model(model.inputs, output_inputs(model))
    variables = model.trainable_variables
    bf16 = resolve_precision(train_cfg.precision) == "bf16"

    @tf.function(jit_compile=JIT_COMPILE)
    def loss_and_gradients(ids: tf.Tensor, targets: tf.Tensor, weights: tf.Tensor) -> tuple:
        with tf.GradientTape() as tape:
            hidden = hidden_states(ids, training=True)
            kernel, bias = output_weights(model)
            loss, hits = fused_softmax_cross_entropy(hidden, kernel, bias, targets, weights, bf16)
        return tf.stack([loss, hits, tf.reduce_sum(weights)]), tape.gradient(loss, variables)

    def replica_train_step(ids: tf.Tensor, targets: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
        sums, gradients = loss_and_gradients(ids, targets, weights)
        if train_cfg.clipnorm:
            # Clip the summed gradient, as one process clips it; the optimizer then sums the
            # workers' identical shares back to it (and its own clipping finds nothing to do).
            context = tf.distribute.get_replica_context()
            gradients = [
                tf.clip_by_norm(gradient, train_cfg.clipnorm) / workers
                for gradient in context.all_reduce(SUM, gradients)
            ]
        optimizer.apply(gradients, variables)  # sums the gradients over the workers first
        return sums

    @tf.function(jit_compile=JIT_COMPILE)
    def validation_sums(ids: tf.Tensor, targets: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
        logits = model(ids, training=False)
        targets = tf.cast(targets, tf.int32)
        loss = tf.reduce_sum(softmax_cross_entropy(logits, targets) * weights)
        at_target = tf.gather(logits, targets[..., None], batch_dims=2)[..., 0]
        hits = tf.reduce_sum(tf.cast(at_target >= tf.reduce_max(logits, -1), tf.float32) * weights)
        return tf.stack([loss, hits, tf.reduce_sum(weights)])

    # One trace whatever the batch width: collectives are numbered as they are traced, and
    # every worker must trace the same ones in the same order (XLA still compiles per width).
    batch_spec = [tf.TensorSpec([rows, None], tf.int32)] * 2 + [
        tf.TensorSpec([rows, None], tf.float32)
    ]

    def over_workers(replica_fn: Callable) -> Callable:
        def step(ids: tf.Tensor, targets: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
            sums = strategy.run(replica_fn, args=(ids, targets, weights))
            return strategy.reduce(SUM, sums, axis=None)

        return tf.function(step, input_signature=batch_spec)

    train_step, val_step = over_workers(replica_train_step), over_workers(validation_sums)

    def epoch_sums(dataset: tf.data.Dataset, step: Callable) -> np.ndarray:
        total = tf.zeros([3])
        for ids, targets, weights in dataset:
            total += step(ids, targets, weights)
        return total.numpy()

    backup_dir = out_dir / "backup"
    restored = _restore_backup(
        backup_dir, model, train_cfg.epochs, chief, BACKUP_METADATA, BACKUP_WEIGHTS
    )
    resumed_from_epoch = _agreed(strategy, restored)
    if resumed_from_epoch:
        logger.info("resuming from epoch %d (backup in %s)", resumed_from_epoch, backup_dir)

    callback_list = keras.callbacks.CallbackList(
        [
            *stopping_callbacks(train_cfg),
            *(callbacks if chief else []),
        ],
        model=model,
    )
    history: dict[str, list[float]] = {}
    train_phase_seconds: list[float] = []
    model.stop_training = False
    started = time.perf_counter()
    try:
        callback_list.on_train_begin()
        for epoch in range(resumed_from_epoch, train_cfg.epochs):
            callback_list.on_epoch_begin(epoch)
            epoch_started = time.perf_counter()
            loss, hits, weight = epoch_sums(train_set, train_step)
            train_phase_seconds.append(time.perf_counter() - epoch_started)
            callback_list.on_test_begin()
            val_loss, val_hits, val_weight = epoch_sums(val_set, val_step)
            logs = {
                "loss": float(loss / steps),
                "accuracy": float(hits / weight),
                "val_loss": float(val_loss / val_steps),
                "val_accuracy": float(val_hits / val_weight),
            }
            callback_list.on_train_batch_end(steps - 1, logs)  # TerminateOnNaN reads "loss"
            callback_list.on_epoch_end(epoch, logs)
            for key, value in logs.items():
                history.setdefault(key, []).append(value)
            if chief:
                _write_backup(backup_dir, model, epoch + 1, BACKUP_METADATA, BACKUP_WEIGHTS)
            if model.stop_training:
                break
        callback_list.on_train_end()
    except LOST_WORKER_ERRORS as error:
        first = next(iter(str(error).strip().splitlines()), type(error).__name__)
        raise WorkerLost(
            f"multi-worker training lost a worker ({type(error).__name__}: {first[:200]}); "
            f"start every worker again to resume from the backup in {backup_dir}"
        ) from error
    train_seconds = time.perf_counter() - started
    phases = train_phase_seconds[1:] or train_phase_seconds  # the first epoch compiles

    for key in ("loss", "val_loss"):
        with np.errstate(over="ignore"):
            history[key.replace("loss", "perplexity")] = np.exp(history[key]).tolist()
    path = out_dir / "model.keras"
    if chief:
        tmp = out_dir / f".model-{os.getpid()}.tmp.keras"
        try:
            ensure_room_for(model, out_dir, copies=1)
            model.save(tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        shutil.rmtree(backup_dir, ignore_errors=True)  # as a successful fit deletes its backup
    best_here = int(np.argmin(history["val_loss"]))
    trained = TrainedModel(
        path=path,
        epochs_run=resumed_from_epoch + len(history["loss"]),
        best_epoch=resumed_from_epoch + best_here + 1,
        history=history,
        train_seconds=train_seconds,
        tokens_per_s=train_targets / float(np.median(phases)),
        padding_fraction=padding_fraction,
        resumed_from_epoch=resumed_from_epoch,
    )
    logger.info(
        "trained %d epochs on %d workers (best %d, val perplexity %.1f) in %.1f s",
        trained.epochs_run,
        workers,
        trained.best_epoch,
        history["val_perplexity"][best_here],
        train_seconds,
    )
    return trained


def _restore_backup(
    backup_dir: Path, model: keras.Model, epochs: int, chief: bool, metadata: str, weights: str
) -> int:
    """The epochs finished in the backup, its weights and optimizer state loaded into `model`;
    0 without one. The chief deletes a corrupt backup (see tasks.train.fit._resumable_epoch)."""
    if not (backup_dir / metadata).exists():
        return 0
    try:
        epoch = json.loads((backup_dir / metadata).read_text())["epoch"]
        if type(epoch) is not int or not 0 < epoch < epochs:
            raise ValueError(f"{metadata} says epoch {epoch!r}, not one of 1..{epochs - 1}")
        model.load_weights(backup_dir / weights)
        return epoch
    except Exception as error:  # whatever fails to load means training starts over
        reason = f"{type(error).__name__}: {next(iter(str(error).splitlines()), '')}"
        logger.warning("backup in %s is corrupt (%s); training starts over", backup_dir, reason)
        if chief:
            shutil.rmtree(backup_dir, ignore_errors=True)
        return 0


def _agreed(strategy: tf.distribute.Strategy, epoch: int) -> int:
    """`epoch` when every worker resumes from the same one; else the workers do not see the
    same backup (the work directory must be shared storage)."""

    def sums() -> tf.Tensor:
        context = tf.distribute.get_replica_context()
        return context.all_reduce(SUM, tf.constant([1, epoch, epoch * epoch], tf.int64))

    local = strategy.experimental_local_results(strategy.run(tf.function(sums)))[0]
    workers, total, squares = (int(value) for value in local.numpy())
    if squares * workers != total**2:  # all equal: no variance
        raise InputError(
            f"the workers found different training backups (epoch {epoch} here, "
            f"{total / workers:.1f} on average): every worker must see the same "
            "--workdir (shared storage)"
        )
    return epoch


def _write_backup(
    backup_dir: Path, model: keras.Model, epoch: int, metadata: str, weights: str
) -> None:
    """Weights and optimizer state, then the epoch: each file replaced whole."""
    backup_dir.mkdir(parents=True, exist_ok=True)
    ensure_room_for(model, backup_dir)
    tmp = backup_dir / f".{os.getpid()}.tmp.weights.h5"
    model.save_weights(tmp)
    os.replace(tmp, backup_dir / weights)
    tmp_json = backup_dir / f".{os.getpid()}.tmp.json"
    tmp_json.write_text(json.dumps({"epoch": epoch}))
    os.replace(tmp_json, backup_dir / metadata)
