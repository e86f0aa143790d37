"""Training with the output layer and the exact softmax cross-entropy fused into one op.

At the seed sizes every trained position has 10 000 logits, and the step is bound by the passes
over (positions × vocab) tensors more than by the matrix products. As separate Keras layers,
XLA:CPU wrote a bias-added copy of the logits, the exponentials, the probabilities and the logits'
gradient in two shapes, each read again by the next kernel (XLA:CPU fuses no element-wise work
into a reduction). `fused_softmax_cross_entropy` computes the loss, the hits of the top-1
accuracy and the three gradients with:

- the bias folded into the product (a column of ones beside the hidden states, the bias as one
  more kernel row): no bias-added copy, and the bias gradient falls out of the kernel's product
  instead of a separate column sum;
- no stored probabilities: the backward pass recomputes them from the logits and the per-row
  log-sum-exp in the one fusion that writes the logits' gradient, once.

With ``bf16`` the three products take bfloat16 inputs and accumulate in float32
(``XlaDotV2`` with ``preferred_element_type``), where the CPU multiplies bfloat16 natively
(`bf16_products_accelerated`). The logits, the log-sum-exp, the loss and every weight and
optimizer slot stay float32; the bias enters the product as two bfloat16 rows (its value and its
rounding error), so it still carries ~16 bits. Only training uses this: validation, evaluation,
serving and the saved model are the plain Keras layers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import keras
import tensorflow as tf
from tensorflow.compiler.tf2xla.python import xla
from tensorflow.compiler.xla import xla_data_pb2

from tasks.train.softmax_loss import SoftmaxCrossEntropy, TopOneAccuracy

# CPU flags of native bfloat16 products: Intel AMX tiles, or AVX-512's bf16 dot product.
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU's feature flags (empty where /proc/cpuinfo is absent: not Linux)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def bf16_products_accelerated(flags: set[str]) -> bool:
    return any(flag in flags for flag in BF16_CPU_FLAGS)


def resolve_precision(
    setting: Literal["auto", "fp32", "bf16"], flags: set[str] | None = None
) -> Literal["fp32", "bf16"]:
    """`setting`, with auto → bf16 where the CPU multiplies bfloat16 natively, else fp32."""
    if setting != "auto":
        return setting
    return "bf16" if bf16_products_accelerated(cpu_flags() if flags is None else flags) else "fp32"


def _dot(a: tf.Tensor, b: tf.Tensor, contract_a: int, contract_b: int) -> tf.Tensor:
    """A 2-D product with float32 results (and accumulation) whatever the inputs' type."""
    dims = xla_data_pb2.DotDimensionNumbers()
    dims.lhs_contracting_dimensions.append(contract_a)
    dims.rhs_contracting_dimensions.append(contract_b)
    return xla.dot_general(a, b, dims, preferred_element_type=tf.float32)


def fused_softmax_cross_entropy(
    hidden: tf.Tensor,
    kernel: tf.Tensor,
    bias: tf.Tensor,
    targets: tf.Tensor,
    weights: tf.Tensor,
    bf16: bool = False,
) -> tuple[tf.Tensor, tf.Tensor]:
    """(Σ weight · cross-entropy, Σ weight · [target has the top logit]) of the output layer
    `hidden` @ `kernel` + `bias` over every position; differentiable in the first three.

    Args:
        hidden: (..., units) float32 inputs of the output layer.
        kernel: (units, vocab) float32; a tied embedding passes its (projected) transpose.
        bias: (vocab,) float32.
        targets: (...) int ids in 0..vocab-1.
        weights: (...) float32 per-position weights (0 for padding).
        bf16: bfloat16 products with float32 accumulation.
    """
    units = hidden.shape[-1]
    flat_hidden = tf.reshape(hidden, [-1, units])
    flat_targets = tf.reshape(tf.cast(targets, tf.int32), [-1])
    flat_weights = tf.reshape(tf.cast(weights, tf.float32), [-1])
    return _fused(flat_hidden, kernel, bias, flat_targets, flat_weights, bf16, tf.shape(hidden))


def _fused(
    hidden: tf.Tensor,
    kernel: tf.Tensor,
    bias: tf.Tensor,
    targets: tf.Tensor,
    weights: tf.Tensor,
    bf16: bool,
    hidden_shape: tf.Tensor,
) -> tuple[tf.Tensor, tf.Tensor]:
    @tf.custom_gradient
    def loss_and_hits(hidden: tf.Tensor, kernel: tf.Tensor, bias: tf.Tensor) -> Any:
        units, vocab = kernel.shape[0], tf.shape(kernel)[1]
        if bf16:
            bias_high = tf.cast(tf.cast(bias, tf.bfloat16), tf.float32)
            rows = [kernel, bias_high[None], (bias - bias_high)[None]]
        else:
            rows = [kernel, bias[None]]
        dtype = tf.bfloat16 if bf16 else tf.float32
        full_kernel = tf.cast(tf.concat(rows, 0), dtype)  # (units + 1 or 2, vocab)
        ones = tf.ones([tf.shape(hidden)[0], len(rows) - 1])
        full_hidden = tf.cast(tf.concat([hidden, ones], 1), dtype)
        if bf16:
            # Built transposed, not transposed from `full_hidden`: XLA folds such a transpose
            # into the product, and XLA:CPU runs a bf16 product contracting both operands' first
            # dimension as a float32 one with converts around it (two more passes). In float32
            # the folded form is the faster one (measured).
            full_hidden_t = tf.cast(tf.concat([tf.transpose(hidden), tf.transpose(ones)], 0), dtype)
        else:
            full_hidden_t = tf.transpose(full_hidden)
        logits = _dot(full_hidden, full_kernel, 1, 0)  # (positions, vocab) float32
        row_max = tf.reduce_max(logits, axis=1)
        log_sum_exp = row_max + tf.math.log(
            tf.reduce_sum(tf.exp(logits - row_max[:, None]), axis=1)
        )
        at_target = tf.gather(logits, targets[:, None], batch_dims=1)[:, 0]
        loss = tf.reduce_sum((log_sum_exp - at_target) * weights)
        hits = tf.reduce_sum(tf.cast(at_target >= row_max, tf.float32) * weights)

        def gradient(d_loss: tf.Tensor, d_hits: tf.Tensor) -> tuple[tf.Tensor, ...]:
            # softmax − one-hot, recomputed from the log-sum-exp and written once.
            d_logits = tf.cast(
                (tf.exp(logits - log_sum_exp[:, None]) - tf.one_hot(targets, vocab))
                * (weights * d_loss)[:, None],
                dtype,
            )
            d_hidden = _dot(d_logits, full_kernel, 1, 1)[:, :units]
            d_full_kernel = _dot(full_hidden_t, d_logits, 1, 0)
            return (
                tf.reshape(d_hidden, hidden_shape),
                d_full_kernel[:units],
                d_full_kernel[units],
            )

        return (loss, hits), gradient

    return loss_and_hits(hidden, kernel, bias)


def output_weights(language_model: keras.Model) -> tuple[tf.Tensor, tf.Tensor]:
    """The output layer's (kernel, bias): the one place that knows where they live."""
    layer = language_model.get_layer("logits")
    return tf.convert_to_tensor(layer.kernel), tf.convert_to_tensor(layer.bias)


def output_inputs(language_model: keras.Model) -> keras.KerasTensor:
    """What the output layer maps to logits: the GRU's outputs after their dropout, if any."""
    history = language_model.outputs[0]._keras_history
    return history.operation._inbound_nodes[history.node_index].input_tensors[0]


class FusedSoftmaxTraining(keras.Model):
    """Wraps a model from `build_language_model`; fitting this fits that model's weights with
    `fused_softmax_cross_entropy`. Logs what Keras' compiled loss and metric would: ``loss`` is
    the mean over batches of the weighted sum per batch, ``accuracy`` the weighted top-1 share.
    Validation runs the plain layers (``test_step``)."""

    def __init__(self, language_model: keras.Model, bf16: bool, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.language_model = language_model
        self.hidden_states = keras.Model(language_model.inputs, output_inputs(language_model))
        self.bf16 = bf16
        self.loss_sum = SoftmaxCrossEntropy(reduction="sum")
        self.mean_loss = keras.metrics.Mean(name="loss")
        self.top_one = TopOneAccuracy()

    def call(self, ids: tf.Tensor, training: bool = False) -> tf.Tensor:
        return self.language_model(ids, training=training)

    def get_layer(self, name: str | None = None, index: int | None = None) -> keras.Layer:
        """The trained model's layer: callbacks see `self.model` as the model they train."""
        return self.language_model.get_layer(name, index)

    def train_step(self, data: Any) -> dict[str, tf.Tensor]:
        ids, targets, weights = keras.utils.unpack_x_y_sample_weight(data)
        if weights is None:
            weights = tf.ones_like(targets, tf.float32)
        with tf.GradientTape() as tape:
            hidden = self.hidden_states(ids, training=True)
            kernel, bias = output_weights(self.language_model)
            loss, hits = fused_softmax_cross_entropy(
                hidden, kernel, bias, targets, weights, self.bf16
            )
            # Gradients are summed over replicas (as Keras scales its compiled loss).
            scaled = loss / tf.distribute.get_strategy().num_replicas_in_sync
        variables = self.trainable_variables
        self.optimizer.apply(tape.gradient(scaled, variables), variables)
        self.mean_loss.update_state(loss)
        # What TopOneAccuracy's weighted mean adds up, from the hits counted in the fused op.
        self.top_one.total.assign_add(hits)
        self.top_one.count.assign_add(tf.reduce_sum(tf.cast(weights, tf.float32)))
        return {"loss": self.mean_loss.result(), "accuracy": self.top_one.result()}

    def test_step(self, data: Any) -> dict[str, tf.Tensor]:
        ids, targets, weights = keras.utils.unpack_x_y_sample_weight(data)
        logits = self(ids, training=False)  # builds this wrapper (BackupAndRestore needs it)
        self.mean_loss.update_state(self.loss_sum(targets, logits, weights))
        self.top_one.update_state(targets, logits, weights)
        return {"loss": self.mean_loss.result(), "accuracy": self.top_one.result()}
