"""The seed GRU next-word language model: Embedding → GRU → Dense, outputting logits.

The layers are the TensorFlow text-generation tutorial's, with two deliberate differences:

- The Dense layer outputs **logits**. Softmax is applied only at inference
  (`next_word_probabilities`); training computes the loss from logits, so no B×T×V probability
  tensor is materialized beside the logits.
- **No ``mask_zero``.** Batches are right-padded with id 0 and the padding targets get sample
  weight 0 in the loss and metrics (see ``fit.py``). A forward GRU's output at position t
  depends only on positions ≤ t, so trailing padding cannot change the outputs at real positions:
  the result equals masking. Masking inside the GRU instead adds a ``tf.where`` per time step to
  the CPU ``while_loop`` and has been measured to slow training many times over (keras#14452).
  The price: an input must never have padding *before* real tokens (no left padding).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf


def build_language_model(
    vocab_size: int,
    embedding_dim: int = 64,
    units: int = 64,
    output_dtype: str | None = None,
    dropout: float = 0.0,
    tie_embeddings: bool = False,
    embedding_init: float = 0.05,
) -> keras.Model:
    """Next-word model: int32 ids (B, T), any T → logits (B, T, vocab_size).

    Args:
        output_dtype: A Keras dtype policy for the output layer (benchmarks/train.py measures
            "mixed_bfloat16").
        dropout: Rate of dropout on the embeddings and on the GRU outputs (training only).
        tie_embeddings: One (vocab_size, embedding_dim) matrix embeds the ids and, transposed,
            makes the logits (`TiedEmbedding`).
        embedding_init: The embeddings start uniform in ±this (Keras' default: 0.05).
    """
    init = keras.initializers.RandomUniform(-embedding_init, embedding_init)
    ids = keras.Input(shape=(None,), dtype="int32", name="ids")
    if tie_embeddings:
        output: keras.layers.Layer = TiedEmbedding(
            vocab_size, embedding_dim, units, init, dtype=output_dtype, name="logits"
        )
        hidden = output(ids)
    else:
        output = keras.layers.Dense(vocab_size, dtype=output_dtype, name="logits")
        hidden = keras.layers.Embedding(
            vocab_size, embedding_dim, embeddings_initializer=init, name="embedding"
        )(ids)
    if dropout:
        hidden = keras.layers.Dropout(dropout, name="embedding_dropout")(hidden)
    hidden = keras.layers.GRU(
        units, return_sequences=True, recurrent_initializer="glorot_uniform", name="gru"
    )(hidden)
    if dropout:
        hidden = keras.layers.Dropout(dropout, name="gru_dropout")(hidden)
    return keras.Model(ids, output(hidden), name="gru_language_model")


@keras.saving.register_keras_serializable(package="reviewgru")
class TiedEmbedding(keras.layers.Layer):
    """The embedding and the output layer in one, sharing one matrix (Press & Wolf, 2017).

    Called on int ids it embeds them; called on float hidden states (B, T, units) it returns
    logits ``hidden @ kernel + bias`` with ``kernel = (embeddings @ projection)ᵀ``, shape
    (units, vocab_size) like a Dense layer's. The projection (units → embedding_dim, as a
    (embedding_dim, units) matrix) exists only when units differ from embedding_dim. One layer
    called twice keeps the model functional, so it saves and loads as .keras without a custom
    model class.
    """

    def __init__(
        self,
        vocab_size: int,
        embedding_dim: int,
        units: int,
        embeddings_initializer: Any = "uniform",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.vocab_size, self.embedding_dim, self.units = vocab_size, embedding_dim, units
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)

    def build(self, input_shape: Any) -> None:
        self.embeddings = self.add_weight(
            shape=(self.vocab_size, self.embedding_dim),
            initializer=self.embeddings_initializer,
            name="embeddings",
        )
        self.projection = (
            self.add_weight(shape=(self.embedding_dim, self.units), name="projection")
            if self.units != self.embedding_dim
            else None
        )
        self.bias = self.add_weight(shape=(self.vocab_size,), initializer="zeros", name="bias")

    @property
    def kernel(self) -> Any:
        """The (units, vocab_size) output matrix, as a Dense layer's ``kernel``."""
        matrix = self.embeddings if self.projection is None else self.embeddings @ self.projection
        return keras.ops.transpose(matrix)

    def call(self, inputs: Any) -> Any:
        if "int" in keras.backend.standardize_dtype(inputs.dtype):
            return keras.ops.take(self.embeddings, inputs, axis=0)
        return keras.ops.matmul(inputs, keras.ops.cast(self.kernel, inputs.dtype)) + keras.ops.cast(
            self.bias, inputs.dtype
        )

    def compute_output_spec(self, inputs: Any) -> Any:
        if "int" in keras.backend.standardize_dtype(inputs.dtype):
            shape, width = inputs.shape, self.embedding_dim
        else:
            shape, width = inputs.shape[:-1], self.vocab_size
        return keras.KerasTensor((*shape, width), dtype=self.compute_dtype)

    def get_config(self) -> dict[str, Any]:
        return super().get_config() | {
            "vocab_size": self.vocab_size,
            "embedding_dim": self.embedding_dim,
            "units": self.units,
            "embeddings_initializer": keras.initializers.serialize(self.embeddings_initializer),
        }


def load_language_model(path: str | Path) -> keras.Model:
    """A saved model, for forward passes only; this module's import registers `TiedEmbedding`,
    so every loader goes through here (a process that never imported it cannot read the file)."""
    return keras.models.load_model(path, compile=False)


_COMPILED: weakref.WeakKeyDictionary[keras.Model, Callable[[np.ndarray], tf.Tensor]] = (
    weakref.WeakKeyDictionary()
)


def _inference(model: keras.Model) -> Callable[[np.ndarray], tf.Tensor]:
    """The model as a graph function of any (B, T): a served request must not pay eager
    execution's overhead on every call (README, Benchmarks)."""
    if model not in _COMPILED:
        spec = tf.TensorSpec([None, None], tf.int32)
        _COMPILED[model] = tf.function(
            lambda ids: model(ids, training=False), input_signature=[spec]
        )
    return _COMPILED[model]


def next_word_probabilities(model: keras.Model, ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Probabilities of the word after each row's last real token.

    Args:
        model: A model from `build_language_model` (outputs logits).
        ids: (B, T) ids, right-padded with 0.
        lengths: (B,) number of real tokens per row, each in 1..T.

    Returns:
        (B, vocab_size) float64 rows summing to 1.
    """
    ids = np.asarray(ids, dtype=np.int32)
    lengths = np.asarray(lengths, dtype=np.int64)
    if ids.ndim != 2 or lengths.shape != (ids.shape[0],):
        raise ValueError(f"expected ids (B, T) and lengths (B,), got {ids.shape}, {lengths.shape}")
    if lengths.size and (lengths.min() < 1 or lengths.max() > ids.shape[1]):
        raise ValueError(f"lengths must lie in 1..{ids.shape[1]}")
    # Columns past the longest row are padding only; outputs do not depend on them.
    width = int(lengths.max(initial=1))
    logits = np.asarray(_inference(model)(ids[:, :width]))
    last = logits[np.arange(len(lengths)), lengths - 1].astype(np.float64)
    last -= last.max(axis=1, keepdims=True)
    probs = np.exp(last)
    return probs / probs.sum(axis=1, keepdims=True)
