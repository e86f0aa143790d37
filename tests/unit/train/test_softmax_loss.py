"""The fused softmax cross-entropy and top-1 accuracy equal Keras' own, values and gradients."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tasks.train.softmax_loss import SoftmaxCrossEntropy, TopOneAccuracy


@pytest.fixture
def batch() -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    rng = np.random.default_rng(0)
    logits = tf.constant(rng.normal(scale=6.0, size=(4, 7, 300)).astype(np.float32))
    targets = tf.constant(rng.integers(0, 300, size=(4, 7)).astype(np.int32))
    weights = tf.constant((rng.random((4, 7)) > 0.3).astype(np.float32))
    return logits, targets, weights


@pytest.mark.parametrize("jit", [False, True])
def test_loss_and_gradient_equal_keras(
    batch: tuple[tf.Tensor, tf.Tensor, tf.Tensor], jit: bool
) -> None:
    logits, targets, weights = batch
    keras_loss = keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, reduction="mean_with_sample_weight"
    )
    ours = SoftmaxCrossEntropy(reduction="mean_with_sample_weight")

    @tf.function(jit_compile=jit)
    def value_and_gradient(loss: keras.losses.Loss) -> tuple[tf.Tensor, tf.Tensor]:
        with tf.GradientTape() as tape:
            tape.watch(logits)
            value = loss(targets, logits, weights)
        return value, tape.gradient(value, logits)

    expected, expected_gradient = value_and_gradient(keras_loss)
    value, gradient = value_and_gradient(ours)
    assert float(value) == pytest.approx(float(expected), rel=1e-6)
    np.testing.assert_allclose(gradient, expected_gradient, atol=1e-7)
    # Padding (weight 0) gets no gradient.
    assert not np.any(np.asarray(gradient)[np.asarray(weights) == 0])


def test_accuracy_equals_argmax_accuracy(batch: tuple[tf.Tensor, tf.Tensor, tf.Tensor]) -> None:
    logits, targets, weights = batch
    # Make about half the targets the top logit, so the accuracy is far from 0.
    top = tf.argmax(logits, axis=-1, output_type=tf.int32)
    targets = tf.where(tf.range(7) % 2 == 0, top, targets)
    expected = keras.metrics.SparseCategoricalAccuracy()
    expected.update_state(targets, logits, weights)
    ours = TopOneAccuracy()
    ours.update_state(targets, logits, weights)
    assert 0.3 < float(ours.result()) == pytest.approx(float(expected.result()))
    assert ours.name == "accuracy"


def test_compiled_model_saves_and_loads(tmp_path) -> None:
    ids = keras.Input(shape=(None,), dtype="int32")
    model = keras.Model(ids, keras.layers.Dense(5)(keras.layers.Embedding(5, 3)(ids)))
    model.compile(
        loss=SoftmaxCrossEntropy(reduction="mean_with_sample_weight"),
        weighted_metrics=[TopOneAccuracy()],
    )
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    x = np.array([[1, 2, 3]], np.int32)
    assert loaded.evaluate(x, x, verbose=0) == pytest.approx(model.evaluate(x, x, verbose=0))
