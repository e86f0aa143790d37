"""Training with a sampled softmax loss (`--loss sampled`), for large vocabularies.

The exact loss multiplies every hidden state by the whole 64 × vocab output matrix: ~95 % of the
training FLOPs at the seed sizes. A sampled softmax scores the true word against `negatives`
words drawn from a log-uniform (Zipf-like) distribution instead (Jean et al., 2015), so a step
costs far less; it is a biased estimate of the exact loss. Only training uses it: `test_step`
(validation) and everything after training use the exact softmax of the same weights.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf


class SampledSoftmaxTraining(keras.Model):
    """Wraps a model from `build_language_model`; fitting this fits that model's weights."""

    def __init__(self, language_model: keras.Model, negatives: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.language_model = language_model
        # What the output layer reads: the GRU's outputs, after their dropout when there is one.
        names = {layer.name for layer in language_model.layers}
        hidden = "gru_dropout" if "gru_dropout" in names else "gru"
        self.hidden_states = keras.Model(
            language_model.inputs, language_model.get_layer(hidden).output
        )
        self.output_layer = language_model.get_layer("logits")  # Dense or TiedEmbedding
        self.vocab_size = int(language_model.output.shape[-1])
        self.negatives = negatives
        # Tracked (and reset every epoch) by Keras; named apart from the exact validation "loss".
        self.sampled_loss = keras.metrics.Mean(name="sampled_loss")

    def call(self, ids: tf.Tensor, training: bool = False) -> tf.Tensor:
        return self.language_model(ids, training=training)

    def train_step(self, data: Any) -> dict[str, tf.Tensor]:
        ids, targets, weights = keras.utils.unpack_x_y_sample_weight(data)
        weights = tf.reshape(tf.cast(weights, tf.float32), [-1])
        with tf.GradientTape() as tape:
            hidden = self.hidden_states(ids, training=True)
            losses = tf.nn.sampled_softmax_loss(
                weights=tf.transpose(self.output_layer.kernel),
                biases=self.output_layer.bias,
                labels=tf.reshape(tf.cast(targets, tf.int64), [-1, 1]),
                inputs=tf.reshape(hidden, [-1, hidden.shape[-1]]),
                num_sampled=self.negatives,
                num_classes=self.vocab_size,
            )
            real = tf.reduce_sum(weights)
            loss = tf.reduce_sum(losses * weights) / tf.maximum(real, 1.0)
        variables = self.trainable_variables
        self.optimizer.apply(tape.gradient(loss, variables), variables)
        self.sampled_loss.update_state(loss, sample_weight=real)
        return {"loss": self.sampled_loss.result()}

    def test_step(self, data: Any) -> dict[str, tf.Tensor]:
        logs = super().test_step(data)
        logs.pop("sampled_loss", None)  # not computed in validation, which is exact
        return logs
