"""Training windows, the tf.data pipeline, and a tiny end-to-end fit."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import pytest

from tasks.config import ModelConfig, TrainConfig
from tasks.records import InputError, TokenizedData, TrainedModel
from tasks.train import distributed
from tasks.train.fit import make_dataset, train_model
from tasks.train.scoring import score_targets
from tasks.train.windows import (
    bucket_widths,
    computed_positions,
    load_windows,
    pack_sequences,
    read_sequences,
)


def test_windows_cut_pad_and_stride(tmp_path: Path, write_split: Callable[..., None]) -> None:
    reviews = [[5, 6, 7, 8, 9, 10, 11], [2], [3, 4], [], [12, 13, 14, 15, 16]]
    # Two row groups: the ids column arrives in chunks and is combined.
    write_split(tmp_path / "s.parquet", reviews, row_group_size=2)
    x, y = load_windows(tmp_path / "s.parquet", max_len=3)
    windows = [[5, 6, 7, 8], [8, 9, 10, 11], [3, 4, 0, 0], [12, 13, 14, 15], [15, 16, 0, 0]]
    np.testing.assert_array_equal(x, np.array(windows)[:, :-1])
    np.testing.assert_array_equal(y, np.array(windows)[:, 1:])
    assert x.dtype == y.dtype == np.int32
    assert x.shape == (5, 3)


def test_every_non_first_token_is_a_target_once(
    tmp_path: Path, write_split: Callable[..., None]
) -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(0, 30, size=100)
    ids = iter(range(1, int(lengths.sum()) + 1))  # unique ids: each token is identifiable
    reviews = [[next(ids) for _ in range(n)] for n in lengths]
    write_split(tmp_path / "s.parquet", reviews)
    x, y = load_windows(tmp_path / "s.parquet", max_len=7)
    expected = sorted(token for review in reviews for token in review[1:])
    assert sorted(y[y != 0].tolist()) == expected
    # Each real target's input is the token before it in the same review.
    np.testing.assert_array_equal(x[y != 0], y[y != 0] - 1)
    # Padding only at the right end of a window.
    assert np.all(np.diff((y == 0).astype(int), axis=1) >= 0)


def test_empty_split_has_no_windows(tmp_path: Path, write_split: Callable[..., None]) -> None:
    write_split(tmp_path / "s.parquet", [[4], []])
    x, y = load_windows(tmp_path / "s.parquet", max_len=5)
    assert x.shape == y.shape == (0, 5)


def test_dataset_weights_mask_padding_and_shuffle_is_seeded() -> None:
    x = np.arange(1, 41, dtype=np.int32).reshape(10, 4)
    y = np.where(np.arange(4) < np.arange(10)[:, None] % 4 + 1, x + 100, 0).astype(np.int32)
    batches = list(make_dataset(x, y, batch_size=4, shuffle=True, seed=3).as_numpy_iterator())
    assert [len(b[0]) for b in batches] == [4, 4, 4]  # the last one filled up with padding
    assert not batches[-1][1][2:].any()
    for xb, yb, wb in batches:
        assert wb.dtype == np.float32
        # Real targets weigh batches / targets: summed, an epoch's loss is their mean.
        np.testing.assert_allclose(wb, (yb != 0) * len(batches) / np.count_nonzero(y))
        np.testing.assert_array_equal(yb[yb != 0], xb[yb != 0] + 100)  # rows stay paired
    again = list(make_dataset(x, y, batch_size=4, shuffle=True, seed=3).as_numpy_iterator())
    np.testing.assert_array_equal(batches[0][0], again[0][0])
    in_order = next(make_dataset(x, y, batch_size=4, shuffle=False, seed=3).as_numpy_iterator())
    np.testing.assert_array_equal(in_order[0], x[:4])


def test_bucket_widths_round_real_targets_up() -> None:
    real = np.array([1, 2, 3, 4, 5, 9, 10, 11, 40])
    y = (np.arange(40) < real[:, None]).astype(np.int32)
    np.testing.assert_array_equal(bucket_widths(y, 4), [10, 10, 10, 10, 10, 10, 10, 20, 40])
    np.testing.assert_array_equal(bucket_widths(y, 1), [40] * 9)
    # max_len 7 in 3 buckets: ceil(7/3), ceil(14/3), 7
    np.testing.assert_array_equal(bucket_widths(y[:4, :7], 3), [3, 3, 3, 5])


def test_bucketed_batches_keep_every_target_and_cut_only_padding(
    tmp_path: Path, write_split: Callable[..., None]
) -> None:
    rng = np.random.default_rng(1)
    write_split(tmp_path / "s.parquet", [list(range(1, n + 1)) for n in rng.integers(2, 30, 300)])
    x, y = load_windows(tmp_path / "s.parquet", max_len=12)
    batches = list(make_dataset(x, y, 8, shuffle=True, seed=5, buckets=3).as_numpy_iterator())

    dataset = make_dataset(x, y, 8, shuffle=True, seed=5, buckets=3)
    assert dataset.cardinality() == len(batches)  # Keras' progress bar knows the steps
    widths = {xb.shape[1] for xb, _, _ in batches}
    assert widths == {4, 8, 12}
    for xb, yb, wb in batches:
        assert len(xb) == 8  # filled up with all-padding rows if need be
        # Every window of a batch needs its width: it has a real target in the last 4 columns
        # (filler rows, all padding, come last).
        windows = yb[yb.any(axis=1)]
        assert not yb[len(windows) :].any()
        assert np.all(windows[:, -4:].any(axis=1)) or xb.shape[1] == 4
        np.testing.assert_allclose(wb, (yb != 0) * len(batches) / np.count_nonzero(y))
    # The same (input, target) pairs as the unbucketed windows, each once.
    pairs = sorted(
        (int(a), int(b))
        for xb, yb, _ in batches
        for a, b in zip(xb[yb != 0], yb[yb != 0], strict=True)
    )
    assert pairs == sorted(zip(x[y != 0].tolist(), y[y != 0].tolist(), strict=True))
    assert computed_positions(y, 8, 3) == sum(yb.size for _, yb, _ in batches)
    again = list(make_dataset(x, y, 8, shuffle=True, seed=5, buckets=3).as_numpy_iterator())
    for (xb, _, _), (xa, _, _) in zip(batches, again, strict=True):
        np.testing.assert_array_equal(xb, xa)


def test_pack_sequences_matches_flat_layout() -> None:
    values, offsets = pack_sequences([np.array([3, 4]), np.array([], dtype=np.int32)])
    np.testing.assert_array_equal(values, [3, 4])
    np.testing.assert_array_equal(offsets, [0, 2, 2])


@pytest.fixture(scope="module")
def trained(
    tmp_path_factory: pytest.TempPathFactory, toy_data: Callable[..., TokenizedData]
) -> tuple[TrainedModel, TokenizedData]:
    directory = tmp_path_factory.mktemp("toy")
    data = toy_data(directory)
    cfg = TrainConfig(epochs=3, batch_size=16, learning_rate=1e-2, max_len=8)
    result = train_model(data, ModelConfig(embedding_dim=8, units=16), cfg, directory / "out")
    return result, data


def test_training_lowers_the_loss_and_records_history(
    trained: tuple[TrainedModel, TokenizedData],
) -> None:
    result, data = trained
    history = result.history
    assert result.epochs_run == 3
    assert history["loss"][-1] < history["loss"][0]
    assert history["val_loss"][-1] < np.log(data.vocab_size - 1)  # better than uniform guessing
    for key in ("val_loss", "val_accuracy", "perplexity", "val_perplexity"):
        assert len(history[key]) == 3
    np.testing.assert_allclose(history["val_perplexity"], np.exp(history["val_loss"]))
    assert result.best_epoch == int(np.argmin(history["val_loss"])) + 1
    assert 0.0 < result.padding_fraction < 1.0
    # Throughput counts the training phase only: more than the whole fit's average, which has
    # XLA compiling and validation in it.
    train_targets = np.count_nonzero(
        load_windows(result.path.parent.parent / "train.parquet", 8)[1]
    )
    assert result.tokens_per_s > train_targets * 3 / result.train_seconds > 0


def test_saved_model_reloads(trained: tuple[TrainedModel, TokenizedData]) -> None:
    result, data = trained
    assert result.path.name == "model.keras"
    assert [p.name for p in result.path.parent.iterdir()] == ["model.keras"]  # no temp left
    model = keras.models.load_model(result.path)
    logits = np.asarray(model(np.array([[2, 3, 4]], dtype=np.int32)))
    assert logits.shape == (1, 3, data.vocab_size)
    assert int(logits[0, -1].argmax()) == 5  # 2, 3, 4 → 5 is learned


class PoisonWeights(keras.callbacks.Callback):
    """Turns the embeddings into NaN before the third batch, as a diverged optimizer would.

    (A huge learning rate alone only gives huge finite losses: the logits loss is stable.)
    """

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        if batch == 2:
            # "embedding" untied, "logits" tied: the one variable named so either way.
            table = next(v for v in self.model.weights if v.name == "embeddings")
            table.assign(np.full(table.shape, np.nan, dtype="float32"))


def test_nan_run_raises_and_saves_nothing(
    tmp_path: Path, toy_data: Callable[..., TokenizedData]
) -> None:
    data = toy_data(tmp_path)
    cfg = TrainConfig(epochs=2, batch_size=16, max_len=8)
    with pytest.raises(RuntimeError, match="NaN or Inf"):
        train_model(
            data, ModelConfig(embedding_dim=8, units=8), cfg, tmp_path / "out", [PoisonWeights()]
        )
    assert not (tmp_path / "out" / "model.keras").exists()


def test_val_split_without_windows_is_refused(
    tmp_path: Path, toy_data: Callable[..., TokenizedData]
) -> None:
    data = toy_data(tmp_path, val_reviews=[[3], [4]])
    with pytest.raises(ValueError, match=r"val\.parquet yields no training windows"):
        train_model(data, ModelConfig(), TrainConfig(), tmp_path / "out")


@pytest.mark.parametrize(
    "options",
    [{}, {"loss": "sampled", "sampled_negatives": 4}, {"strategy": "mirrored"}],
    ids=["defaults", "sampled-loss", "mirrored-strategy"],
)
def test_training_options_learn_and_save_the_plain_model(
    tmp_path: Path, options: dict, toy_data: Callable[..., TokenizedData]
) -> None:
    """Sampled softmax trains, but validation is exact; a strategy changes nothing saved."""
    data = toy_data(tmp_path)
    cfg = TrainConfig(epochs=4, batch_size=16, max_len=8, learning_rate=0.02, **options)
    result = train_model(data, ModelConfig(embedding_dim=8, units=16), cfg, tmp_path / "out")

    history = result.history
    assert set(history) >= {"loss", "val_loss", "val_accuracy", "val_perplexity"}
    assert history["val_loss"][-1] < history["val_loss"][0] < np.log(data.vocab_size)
    model = keras.models.load_model(result.path, compile=False)
    assert model.name == "gru_language_model"
    # The val loss is the mean over every real target of the best weights (early stopping
    # restored them), whatever the length buckets did to the batches.
    _, _, nll, _ = score_targets(model, read_sequences(data.split_path("val")), cfg.max_len)
    exact = float(np.mean(nll))
    assert min(history["val_loss"]) == pytest.approx(exact, rel=1e-4)


def test_tf_config_names_the_chief_and_each_workers_place(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def roles(cluster: dict[str, list[str]], role: str, index: int) -> tuple[int, bool, int]:
        task = {"type": role, "index": index}
        monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": task}))
        return distributed.cluster_workers(), distributed.is_chief(), distributed.worker_index()

    with_chief = {"chief": ["h:1"], "worker": ["h:2", "h:3"]}
    assert roles(with_chief, "chief", 0) == (3, True, 0)
    assert roles(with_chief, "worker", 0) == (3, False, 1)
    assert roles(with_chief, "worker", 1) == (3, False, 2)
    workers_only = {"worker": ["h:1", "h:2"]}
    assert roles(workers_only, "worker", 0) == (2, True, 0)
    assert roles(workers_only, "worker", 1) == (2, False, 1)
    train = TrainConfig(strategy="multiworker")
    assert distributed.trains_as_worker(train)
    assert not distributed.trains_as_worker(TrainConfig(strategy="default"))
    monkeypatch.delenv("TF_CONFIG")
    assert (distributed.cluster_workers(), distributed.is_chief()) == (1, True)
    assert not distributed.trains_across_workers(train)  # one worker: Keras' fit trains
    monkeypatch.setenv("TF_CONFIG", "not json")
    with pytest.raises(InputError, match="TF_CONFIG is not a JSON object"):
        distributed.cluster_workers()
