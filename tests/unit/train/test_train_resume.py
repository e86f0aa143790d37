"""A fit killed after an epoch resumes from its backup; a corrupt backup means starting over."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import keras
import pytest

from tasks.config import ModelConfig, TrainConfig
from tasks.records import TokenizedData
from tasks.train.fit import BACKUP_METADATA, BACKUP_WEIGHTS, make_dataset, train_model
from tasks.train.windows import load_windows

MODEL = ModelConfig(embedding_dim=8, units=16)
# No early stop: every test knows how many epochs its fit runs.
TRAIN = TrainConfig(
    epochs=3, batch_size=16, learning_rate=1e-2, max_len=8, early_stopping_patience=10
)
INTERRUPTED_AFTER = 2


class Interrupted(Exception):
    pass


class InterruptAfter(keras.callbacks.Callback):
    """Dies at the end of epoch `epochs`, after BackupAndRestore (an earlier callback) saved it."""

    def __init__(self, epochs: int) -> None:
        super().__init__()
        self.epochs = epochs

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if epoch + 1 == self.epochs:
            raise Interrupted


@pytest.fixture(scope="module")
def interrupted(
    tmp_path_factory: pytest.TempPathFactory, toy_data: Callable[..., TokenizedData]
) -> tuple[TokenizedData, Path]:
    """Toy data and the backup directory a fit left when it died after its second epoch."""
    directory = tmp_path_factory.mktemp("interrupted")
    data = toy_data(directory)
    with pytest.raises(Interrupted):
        train_model(data, MODEL, TRAIN, directory / "out", [InterruptAfter(INTERRUPTED_AFTER)])
    backup = directory / "out" / "backup"
    assert json.loads((backup / BACKUP_METADATA).read_text())["epoch"] == INTERRUPTED_AFTER
    assert not (directory / "out" / "model.keras").exists()
    return data, backup


def _out_dir_with_backup(backup: Path, tmp_path: Path) -> Path:
    out = tmp_path / "out"
    shutil.copytree(backup, out / "backup")
    return out


def test_interrupted_fit_resumes_from_its_last_epoch(
    interrupted: tuple[TokenizedData, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data, backup = interrupted
    out = _out_dir_with_backup(backup, tmp_path)
    caplog.set_level(logging.INFO, logger="tasks.train.fit")

    result = train_model(data, MODEL, TRAIN, out)

    assert result.resumed_from_epoch == INTERRUPTED_AFTER
    assert f"resuming from epoch {INTERRUPTED_AFTER} (backup in {out / 'backup'})" in caplog.text
    assert result.epochs_run == TRAIN.epochs
    assert len(result.history["loss"]) == len(result.history["val_perplexity"]) == 1
    assert result.best_epoch == TRAIN.epochs  # the only epoch run after the resume
    assert result.tokens_per_s > 0
    assert not (out / "backup").exists()  # a finished fit deletes its backup
    # The optimizer state was restored too: its step count spans all the epochs.
    windows = load_windows(data.split_path("train"), TRAIN.max_len)
    batches = make_dataset(*windows, TRAIN.batch_size, True, TRAIN.seed, buckets=TRAIN.buckets)
    steps_per_epoch = int(batches.cardinality())
    optimizer = keras.models.load_model(result.path).optimizer
    assert int(optimizer.iterations.numpy()) == TRAIN.epochs * steps_per_epoch


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        ("truncated metadata", "JSONDecodeError"),
        ("truncated weights", "OSError"),
    ],
)
def test_corrupt_backup_is_deleted_and_training_starts_over(
    interrupted: tuple[TokenizedData, Path],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    damage: str,
    reason: str,
) -> None:
    data, backup = interrupted
    out = _out_dir_with_backup(backup, tmp_path)
    damaged = (
        out / "backup" / (BACKUP_METADATA if damage == "truncated metadata" else BACKUP_WEIGHTS)
    )
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])

    result = train_model(data, MODEL, TRAIN, out)

    assert result.resumed_from_epoch == 0
    assert result.epochs_run == len(result.history["loss"]) == TRAIN.epochs
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        f"backup in {out / 'backup'} is corrupt ({reason}" in message
        and message.endswith("training starts over")
        for message in warnings
    ), warnings
    assert "resuming from epoch" not in caplog.text
    assert [p.name for p in out.iterdir()] == ["model.keras"]
