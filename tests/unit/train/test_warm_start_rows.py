"""Warm start: the vocabulary mapping on hand-made vocabularies, the weight transfer for tied,
untied and seed-preset models, the init decision, the lineage labels, and a warm fit's crash
safety and NaN guard. Also: a review's split never changes as the data grows (no leakage from the
champion's train split into a later test split)."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import polars as pl
import pytest

from tasks.config import IngestConfig, ModelConfig, PipelineConfig, TokenizerConfig, TrainConfig
from tasks.ingest.snapshot import ingest
from tasks.records import InputError
from tasks.registry.lineage import init_label, runs_since_scratch
from tasks.tokenize.dataset import tokenize_snapshot
from tasks.tokenize.tokenizer import PAD, UNK, Vocab
from tasks.train.fit import BACKUP_METADATA, configured_model, train_model
from tasks.train.warm_start import (
    Evidence,
    WarmStart,
    decide_init,
    map_rows,
    new_word_share,
    shape_difference,
    vocab_row_map,
    warm_train_config,
    weight_shapes,
)
from tests.conftest import TOY_VOCAB, ToyData

OLD = [PAD, UNK, "good", "bad", "tea", "stale"]
NEW = [PAD, UNK, "tea", "coffee", "good", "bad", "fresh"]


def _vocab(tokens: list[str], counts: list[int] | None = None) -> Vocab:
    return Vocab(tokens, counts or [0, *range(len(tokens) - 1, 0, -1)], lowercase=True)


def test_row_map_pairs_words_both_vocabularies_have() -> None:
    new_rows, old_rows = vocab_row_map(OLD, NEW)
    pairs = dict(zip(new_rows.tolist(), old_rows.tolist(), strict=True))
    # [PAD] 0→0, [UNK] 1→1, tea 2←4, good 4←2, bad 5←3; coffee and fresh are new, stale dropped.
    assert pairs == {0: 0, 1: 1, 2: 4, 4: 2, 5: 3}
    assert vocab_row_map(OLD, OLD)[0].tolist() == list(range(len(OLD)))
    assert vocab_row_map(["a"], ["b"])[0].size == 0


def test_map_rows_along_either_axis() -> None:
    new_rows, old_rows = vocab_row_map(OLD, NEW)
    champion = np.arange(len(OLD) * 2, dtype=float).reshape(len(OLD), 2)
    fresh = -np.ones((len(NEW), 2))
    rows = map_rows(fresh, champion, 0, new_rows, old_rows)
    np.testing.assert_array_equal(rows[NEW.index("tea")], champion[OLD.index("tea")])
    np.testing.assert_array_equal(rows[NEW.index("coffee")], [-1, -1])
    np.testing.assert_array_equal(fresh, -1)  # the fresh weights are not modified in place
    columns = map_rows(fresh.T, champion.T, 1, new_rows, old_rows)
    np.testing.assert_array_equal(columns, rows.T)


def _weights(model: keras.Model) -> dict[str, np.ndarray]:
    return {w.path: np.asarray(w.numpy()) for w in model.weights}


@pytest.mark.parametrize(
    "model_cfg",
    [
        ModelConfig(embedding_dim=8, units=8),  # tied, one matrix
        ModelConfig(embedding_dim=8, units=12),  # tied through a projection
        ModelConfig(embedding_dim=8, units=12, tie_embeddings=False),
        PipelineConfig.load(preset="seed").model.model_copy(update={"embedding_dim": 8}),
    ],
    ids=["tied", "tied-projection", "untied", "seed-preset"],
)
def test_warm_start_copies_shared_rows_and_keeps_fresh_ones(model_cfg: ModelConfig) -> None:
    keras.utils.set_random_seed(1)
    champion = configured_model(len(OLD), model_cfg)
    keras.utils.set_random_seed(2)
    fresh = configured_model(len(NEW), model_cfg)
    before = _weights(fresh)
    assert shape_difference(weight_shapes(champion), weight_shapes(fresh)) is None

    warm = WarmStart.from_champion("3", champion, _vocab(OLD), _vocab(NEW))
    warm.apply(fresh)

    theirs, ours = _weights(champion), _weights(fresh)
    assert (warm.vocab, warm.counts) == ("remapped", {"copied": 5, "new": 2, "dropped": 1})
    by_vocab = {"embedding/embeddings": 0, "logits/embeddings": 0, "logits/bias": 0,
                "logits/kernel": 1}  # fmt: skip
    assert set(ours) & set(by_vocab)  # the model has vocabulary-indexed weights
    for path, value in ours.items():
        if path not in by_vocab:  # GRU, projection: copied whole
            np.testing.assert_array_equal(value, theirs[path])
            continue
        rows, old_rows = (
            np.moveaxis(value, by_vocab[path], 0),
            np.moveaxis(theirs[path], by_vocab[path], 0),
        )
        initial = np.moveaxis(before[path], by_vocab[path], 0)
        for word in ("tea", "good", "bad", UNK):
            np.testing.assert_array_equal(rows[NEW.index(word)], old_rows[OLD.index(word)])
        for word in ("coffee", "fresh"):  # as the fresh model initialized them
            np.testing.assert_array_equal(rows[NEW.index(word)], initial[NEW.index(word)])


def test_a_kept_vocabulary_makes_the_warm_start_exact() -> None:
    model_cfg = ModelConfig(embedding_dim=8, units=12, dropout=0.2)
    champion = configured_model(len(OLD), model_cfg)
    fresh = configured_model(len(OLD), model_cfg)
    warm = WarmStart.from_champion("1", champion, _vocab(OLD), _vocab(OLD))
    warm.apply(fresh)
    ids = np.array([[2, 3, 4, 5, 1]], np.int32)
    assert warm.vocab == "kept"
    np.testing.assert_allclose(fresh(ids), champion(ids), rtol=0, atol=0)


def test_other_model_shapes_are_named() -> None:
    tied = weight_shapes(configured_model(len(OLD), ModelConfig(embedding_dim=8, units=8)))
    untied = weight_shapes(
        configured_model(len(OLD), ModelConfig(embedding_dim=8, units=8, tie_embeddings=False))
    )
    wider = weight_shapes(configured_model(len(NEW), ModelConfig(embedding_dim=16, units=16)))
    assert "only in the champion: ['embedding/embeddings'" in str(shape_difference(untied, tied))
    assert shape_difference(tied, wider) == (
        "logits/embeddings is (6, 8) in the champion, (7, 16) here"
    )


def test_new_word_share_counts_train_tokens_without_a_champion_row() -> None:
    # counts: [UNK] 5, tea 10, coffee 4, good 1, bad 0, fresh 0 → 20 tokens, coffee + fresh new
    new = _vocab(NEW, [0, 5, 10, 4, 1, 0, 0])
    assert new_word_share(OLD, new) == pytest.approx(4 / 20)
    assert new_word_share(NEW, new) == 0.0


AUTO = TrainConfig(scratch_every=3, warm_max_new_words=0.2)


@pytest.mark.parametrize(
    ("train_cfg", "evidence", "mode", "reason"),
    [
        (AUTO, Evidence(None), "scratch", "no champion yet"),
        (AUTO.model_copy(update={"init": "scratch"}), Evidence("4"), "scratch",
         "train.init = scratch"),
        (AUTO, Evidence("4", shape_problem="x"), "scratch",
         "champion v4 has another model shape: x"),
        (AUTO, Evidence("4", runs_since_scratch=2), "scratch",
         "train.scratch_every = 3: 2 runs since the last scratch-trained version"),
        (AUTO, Evidence("4", runs_since_scratch=1, new_word_share=0.25), "scratch",
         "25.0% of the train tokens are words champion v4 has no row for"),
        (AUTO, Evidence("4", runs_since_scratch=1, new_word_share=0.05), "warm",
         "champion v4 has the same model shape; 1 runs since the last scratch one"),
        (AUTO.model_copy(update={"scratch_every": 0}), Evidence("4", runs_since_scratch=9),
         "warm", "champion v4 has the same model shape"),
        (AUTO.model_copy(update={"init": "champion"}),
         Evidence("4", runs_since_scratch=2, new_word_share=0.9), "warm",
         "train.init = champion: warm start from champion v4"),
    ],
)  # fmt: skip
def test_init_decision(train_cfg: TrainConfig, evidence: Evidence, mode: str, reason: str) -> None:
    decided, why = decide_init(train_cfg, evidence)
    assert decided == mode
    assert why.startswith(reason)


def test_init_champion_refuses_what_it_cannot_do() -> None:
    forced = TrainConfig(init="champion")
    with pytest.raises(InputError, match="has no champion yet; use --init auto"):
        decide_init(forced, Evidence(None))
    with pytest.raises(InputError, match="champion v2 has another model shape"):
        decide_init(forced, Evidence("2", shape_problem="units"))


def test_runs_since_scratch_and_labels_from_version_tags() -> None:
    scratch = {"init.mode": "scratch"}
    warm = {"init.mode": "warm", "init.parent_version": "2", "init.vocab": "remapped"}
    assert runs_since_scratch([]) is None
    assert runs_since_scratch([(1, {}), (2, warm), (3, warm)]) == 2  # untagged: from before
    assert runs_since_scratch([(3, warm), (1, warm), (2, scratch), (4, warm)]) == 2
    assert runs_since_scratch([(1, warm)]) is None
    assert init_label(warm) == "warm from v2 (vocab remapped)"
    assert (init_label(scratch), init_label({})) == ("scratch", "-")


def test_warm_train_config() -> None:
    train_cfg = TrainConfig(epochs=30, warmup_epochs=2, warm_learning_rate=1e-3, warm_epochs=4)
    warm = warm_train_config(train_cfg)
    assert (warm.learning_rate, warm.epochs, warm.warmup_epochs) == (1e-3, 4, 0)
    assert warm.early_stopping_from_epoch == 0
    assert warm.early_stopping_patience == train_cfg.early_stopping_patience
    assert warm_train_config(train_cfg.model_copy(update={"epochs": 2})).epochs == 2


class _Interrupted(Exception):
    pass


class _InterruptAfterFirstEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        raise _Interrupted


@pytest.mark.slow  # four fits
def test_a_warm_fit_resumes_from_its_backup_and_fails_on_nan(
    tmp_path: Path, toy_data: ToyData
) -> None:
    data = toy_data(tmp_path)
    model_cfg = ModelConfig(embedding_dim=8, units=16)
    train_cfg = TrainConfig(
        epochs=2, batch_size=16, learning_rate=1e-2, max_len=8, warm_learning_rate=1e-3
    )
    champion = train_model(data, model_cfg, train_cfg, tmp_path / "champion")
    vocab = _vocab([PAD, UNK, *(f"w{i}" for i in range(2, TOY_VOCAB))])
    from tasks.train.model import load_language_model

    warm = WarmStart.from_champion("1", load_language_model(champion.path), vocab, vocab)
    warm_cfg = warm_train_config(train_cfg)

    out = tmp_path / "warm"
    with pytest.raises(_Interrupted):
        train_model(
            data,
            model_cfg,
            warm_cfg,
            out,
            [_InterruptAfterFirstEpoch()],
            initial_weights=warm.apply,
        )
    assert json.loads((out / "backup" / BACKUP_METADATA).read_text())["epoch"] == 1
    resumed = train_model(data, model_cfg, warm_cfg, out, initial_weights=warm.apply)
    assert (resumed.resumed_from_epoch, resumed.epochs_run) == (1, 2)
    # Warm-started: its first validation is already near the champion's best, not at the start.
    assert resumed.history["val_perplexity"][0] < champion.history["val_perplexity"][0]

    diverging = warm_cfg.model_copy(update={"learning_rate": 1e37})
    with pytest.raises(RuntimeError, match="NaN or Inf loss"):
        train_model(data, model_cfg, diverging, tmp_path / "nan", initial_weights=warm.apply)
    assert not (tmp_path / "nan" / "model.keras").exists()


def test_a_reviews_split_never_changes_as_the_data_grows(tmp_path: Path) -> None:
    """Ingest + tokenize a corpus, then the corpus grown by new reviews (shuffled in, with and
    without a review id column): every old review keeps its split, so the champion's train
    reviews never land in a later run's test split."""
    rng = np.random.default_rng(0)
    words = ["tea", "good", "bad", "fresh", "stale", "cup", "bag", "taste", "price", "box"]

    def reviews(n: int, prefix: str) -> pl.DataFrame:
        texts = [" ".join(rng.choice(words, size=8)) + f" {prefix}{i}" for i in range(n)]
        return pl.DataFrame({"review_id": [f"{prefix}{i}" for i in range(n)], "review": texts})

    old, new = reviews(300, "a"), reviews(40, "b")
    grown = pl.concat([new, old]).sample(fraction=1.0, shuffle=True, seed=1)
    tokenizer = TokenizerConfig(min_count=1)
    for with_ids in (True, False):
        ingest_cfg = IngestConfig(text_columns=["review"], rating_column=None)
        splits = []
        for name, frame in (("old", old), ("grown", grown)):
            csv = tmp_path / f"{name}-{with_ids}.csv"
            (frame if with_ids else frame.drop("review_id")).write_csv(csv)
            snapshot = ingest(str(csv), ingest_cfg, tmp_path / f"snap-{name}-{with_ids}")
            data = tokenize_snapshot(snapshot.path, tokenizer, tmp_path / f"tok-{name}-{with_ids}")
            by_text = {}
            for split in ("train", "val", "test"):
                ids = pl.read_parquet(data.split_path(split))["review_id"].to_list()
                by_text.update(dict.fromkeys(ids, split))
            splits.append(by_text)
        before, after = splits
        assert len(before) == 300 and len(after) == 340
        assert all(after[review] == split for review, split in before.items())
        assert {"train", "test"} <= set(before.values())
