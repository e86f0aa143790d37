"""The fused output layer + softmax cross-entropy equals Keras' Dense + loss, values and gradients;
bf16 products are chosen from the CPU flags; a fit with it learns and logs what Keras logs."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from tasks.config import TrainConfig
from tasks.train.fit import compile_for_training
from tasks.train.fused_softmax import (
    FusedSoftmaxTraining,
    cpu_flags,
    fused_softmax_cross_entropy,
    resolve_precision,
)
from tasks.train.model import build_language_model

UNITS, VOCAB = 16, 300


@pytest.fixture
def layer_batch() -> tuple[tf.Tensor, ...]:
    rng = np.random.default_rng(0)
    hidden = tf.constant(rng.normal(size=(4, 7, UNITS)).astype(np.float32))
    kernel = tf.Variable(rng.normal(scale=0.8, size=(UNITS, VOCAB)).astype(np.float32))
    bias = tf.Variable(rng.normal(scale=2.0, size=VOCAB).astype(np.float32))
    targets = rng.integers(0, VOCAB, size=(4, 7)).astype(np.int32)
    # About half the targets have the top logit, so the accuracy is far from 0.
    top = np.argmax(hidden.numpy() @ kernel.numpy() + bias.numpy(), axis=-1)
    targets = tf.constant(np.where(np.arange(7) % 2 == 0, top, targets).astype(np.int32))
    weights = tf.constant((rng.random((4, 7)) > 0.3).astype(np.float32) * 0.25)
    return hidden, kernel, bias, targets, weights


def _keras_reference(hidden, kernel, bias, targets, weights):  # type: ignore[no-untyped-def]
    logits = tf.matmul(hidden, kernel) + bias
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="sum")(
        targets, logits, weights
    )
    hits = keras.metrics.sparse_categorical_accuracy(targets, logits)
    return loss, tf.reduce_sum(tf.cast(hits, tf.float32) * weights)


def _value_and_gradients(function, batch, jit: bool):  # type: ignore[no-untyped-def]
    hidden, kernel, bias, targets, weights = batch

    @tf.function(jit_compile=jit)
    def run() -> tuple[tf.Tensor, ...]:
        with tf.GradientTape() as tape:
            tape.watch(hidden)
            loss, hits = function(hidden, kernel, bias, targets, weights)
        return (loss, hits, *tape.gradient(loss, [hidden, kernel, bias]))

    return [np.asarray(value) for value in run()]


@pytest.mark.parametrize("jit", [False, True])
def test_fp32_loss_hits_and_gradients_equal_keras(
    layer_batch: tuple[tf.Tensor, ...], jit: bool
) -> None:
    expected = _value_and_gradients(_keras_reference, layer_batch, jit)
    ours = _value_and_gradients(
        lambda *args: fused_softmax_cross_entropy(*args, bf16=False), layer_batch, jit
    )
    assert ours[0] == pytest.approx(expected[0], rel=1e-6)
    assert ours[1] == pytest.approx(expected[1]) and ours[1] > 0
    for got, want in zip(ours[2:], expected[2:], strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # Padding (weight 0) sends no gradient into the hidden states.
    padding = np.asarray(layer_batch[4]) == 0
    assert not np.any(ours[2][padding])


def test_bf16_products_round_only_their_inputs(layer_batch: tuple[tf.Tensor, ...]) -> None:
    """bf16 inputs, float32 accumulation: close to Keras' float32, and not equal to it (the
    bf16 path really ran); the bias keeps ~16 bits through its two rows."""
    expected = _value_and_gradients(_keras_reference, layer_batch, jit=True)
    ours = _value_and_gradients(
        lambda *args: fused_softmax_cross_entropy(*args, bf16=True), layer_batch, jit=True
    )
    assert ours[0] != expected[0]
    assert ours[0] == pytest.approx(expected[0], rel=5e-3)
    for got, want in zip(ours[2:], expected[2:], strict=True):
        scale = np.abs(want).max()
        assert np.abs(got - want).max() < 2e-2 * scale

    hidden, kernel, bias, targets, weights = layer_batch
    zero_hidden = tf.zeros_like(hidden)  # logits = bias alone
    value, _ = tf.function(jit_compile=True)(fused_softmax_cross_entropy)(
        zero_hidden, kernel, bias, targets, weights, True
    )
    reference, _ = _keras_reference(zero_hidden, kernel, bias, targets, weights)
    assert float(value) == pytest.approx(float(reference), rel=1e-5)


def test_precision_from_cpu_flags(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16\n\n")
    assert "avx512_bf16" in cpu_flags(cpuinfo)
    assert cpu_flags(tmp_path / "missing") == set()
    assert resolve_precision("auto", {"avx512f", "avx512_bf16"}) == "bf16"
    assert resolve_precision("auto", {"amx_bf16", "amx_tile"}) == "bf16"
    assert resolve_precision("auto", {"avx2", "avx512f"}) == "fp32"
    assert resolve_precision("auto", set()) == "fp32"
    assert resolve_precision("fp32", {"amx_bf16", "avx512_bf16"}) == "fp32"
    assert resolve_precision("bf16", {"avx2"}) == "bf16"


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_compile_for_training_selects_the_fused_trainer(precision: str) -> None:
    model = build_language_model(20, 4, 4)
    fitted = compile_for_training(model, TrainConfig(precision=precision))
    assert isinstance(fitted, FusedSoftmaxTraining)
    assert fitted.built  # BackupAndRestore refuses an unbuilt model
    assert fitted.bf16 == (precision == "bf16")
    assert compile_for_training(build_language_model(20, 4, 4), TrainConfig(), fused=False) is not (
        fitted
    )
    sampled = compile_for_training(build_language_model(20, 4, 4), TrainConfig(loss="sampled"))
    assert not isinstance(sampled, FusedSoftmaxTraining)


def _fit(fused: bool, precision: str = "fp32", epochs: int = 6) -> tuple[keras.Model, dict]:
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    # A cycle 1 → 2 → … → 9 → 1: the next word is fully predictable from the current one.
    starts = rng.integers(1, 10, size=64)
    x = ((starts[:, None] + np.arange(12)[None] - 1) % 9 + 1).astype(np.int32)
    y = (x % 9 + 1).astype(np.int32)
    y[::3, 9:] = 0  # some right padding
    x[::3, 10:] = 0
    weights = (y != 0).astype(np.float32) / np.count_nonzero(y) * 4
    model = build_language_model(12, 8, 16)
    fitted = compile_for_training(
        model, TrainConfig(learning_rate=0.02, precision=precision), fused=fused
    )
    history = fitted.fit(
        x,
        y,
        sample_weight=weights,
        batch_size=16,
        epochs=epochs,
        shuffle=False,
        verbose=0,
        validation_data=(x, y, weights),
    ).history
    return model, history


def test_fit_learns_and_logs_what_keras_logs(tmp_path: Path) -> None:
    model, fused = _fit(fused=True)
    _, plain = _fit(fused=False)
    assert set(fused) == set(plain) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    # The same optimization: the same weights start, the same gradients, the same logs.
    np.testing.assert_allclose(fused["loss"], plain["loss"], rtol=1e-4)
    np.testing.assert_allclose(fused["accuracy"], plain["accuracy"], rtol=1e-5)  # sum order
    np.testing.assert_allclose(fused["val_loss"], plain["val_loss"], rtol=1e-4)
    assert fused["loss"][-1] < 0.5 * fused["loss"][0]
    assert fused["val_accuracy"][-1] > 0.9
    # The model saved is the plain Keras one.
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", compile=False)
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]


def test_bf16_fit_learns() -> None:
    _, history = _fit(fused=True, precision="bf16")
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    assert history["val_accuracy"][-1] > 0.9
