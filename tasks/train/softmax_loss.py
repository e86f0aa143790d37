"""The exact softmax cross-entropy from logits and the accuracy, each in one cheap pass.

At the seed sizes every trained token has 10 000 logits, and the passes over them cost as much as
the output layer's matrix products: the formula below and the comparison of the target's logit
with the row maximum each beat what Keras' loss and an ``argmax`` do (README, Benchmarks).
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf


@tf.custom_gradient
def softmax_cross_entropy(logits: tf.Tensor, targets: tf.Tensor) -> Any:
    """-log softmax(logits)[target] per position; the gradient reuses the forward's exponentials."""
    row_max = tf.reduce_max(logits, axis=-1, keepdims=True)
    exps = tf.exp(logits - row_max)
    total = tf.reduce_sum(exps, axis=-1, keepdims=True)
    at_target = tf.gather(logits, targets[..., None], batch_dims=len(targets.shape))
    losses = (tf.math.log(total) + row_max - at_target)[..., 0]

    def gradient(upstream: tf.Tensor) -> tuple[tf.Tensor, None]:
        one_hot = tf.one_hot(targets, tf.shape(logits)[-1], dtype=logits.dtype)
        return upstream[..., None] * (exps / total - one_hot), None

    return losses, gradient


@keras.saving.register_keras_serializable(package="reviewgru")
class SoftmaxCrossEntropy(keras.losses.Loss):
    """Sparse categorical cross-entropy from logits: the same values as Keras' own."""

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        return softmax_cross_entropy(y_pred, tf.cast(y_true, tf.int32))


@keras.saving.register_keras_serializable(package="reviewgru")
class TopOneAccuracy(keras.metrics.Mean):
    """Share of positions whose target has the highest logit (ties count as hits; with float
    logits they are as good as never seen, so this is the argmax accuracy)."""

    def __init__(self, name: str = "accuracy", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)

    def update_state(
        self, y_true: tf.Tensor, y_pred: tf.Tensor, sample_weight: tf.Tensor | None = None
    ) -> Any:
        y_pred = tf.cast(y_pred, tf.float32)  # bf16 logits would tie often
        targets = tf.cast(y_true, tf.int32)[..., None]
        at_target = tf.gather(y_pred, targets, batch_dims=len(targets.shape) - 1)[..., 0]
        hits = tf.cast(at_target >= tf.reduce_max(y_pred, axis=-1), self.dtype)
        return super().update_state(hits, sample_weight=sample_weight)
