"""A full disk (a 64 KiB tmpfs) under each atomic write: the write fails, no partial file stays
where a later run would read it, and the CLI says so in one line."""

import errno
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from flows.failures import explain
from tasks.config import IngestConfig, TokenizerConfig
from tasks.files import write_bytes_atomically
from tasks.ingest.sample_data import write_sample_reviews
from tasks.ingest.snapshot import ingest
from tasks.records import TokenizedData
from tasks.tokenize.dataset import tokenize_snapshot

pytestmark = [pytest.mark.integration]

Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A directory on a 64 KiB tmpfs (needs root, as in the project's container)."""
    mount_point = tmp_path / "full"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def _disk_full_error(error: BaseException) -> None:
    message, code = explain(error)
    assert code == 1
    assert message.startswith("disk full")


def test_each_atomic_write_leaves_nothing_half_written(tmp_path: Path, full_disk: Path) -> None:
    reviews = write_sample_reviews(tmp_path / "reviews.csv", rows=4000, seed=1)
    with pytest.raises(Exception) as snapshot_error:
        ingest(str(reviews), IngestConfig(), full_disk / "snapshots")
    _disk_full_error(snapshot_error.value)
    assert list((full_disk / "snapshots").iterdir()) == []

    snapshot = ingest(str(reviews), IngestConfig(), tmp_path / "snapshots")
    with pytest.raises(Exception) as split_error:
        tokenize_snapshot(snapshot.path, TokenizerConfig(), full_disk / "tokenized")
    _disk_full_error(split_error.value)
    assert list(full_disk.iterdir()) == [full_disk / "snapshots"]

    with pytest.raises(OSError) as vocab_error:
        write_bytes_atomically(full_disk / "vocab.json", b"{}" * 50_000)
    assert vocab_error.value.errno == errno.ENOSPC
    assert list(full_disk.iterdir()) == [full_disk / "snapshots"]


def test_the_cli_says_the_disk_is_full(tmp_path: Path, full_disk: Path, reviewgru: Cli) -> None:
    reviews = write_sample_reviews(tmp_path / "reviews.csv", rows=4000, seed=1)
    args = ["--data", str(reviews), "--workdir", str(full_disk), "--until", "ingest"]
    result = reviewgru("run", *args)

    assert result.returncode == 1, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("reviewgru: error: disk full")
    assert "free space there or choose another --workdir" in last
    assert "Traceback" not in result.stderr
    assert not list((full_disk / "snapshots").glob("*"))


def test_a_model_write_that_fills_the_disk_is_never_read(
    tmp_path: Path, full_disk: Path, toy_data: Callable[..., TokenizedData]
) -> None:
    from tasks.config import ModelConfig, TrainConfig
    from tasks.train.fit import train_model

    data = toy_data(tmp_path)
    model, train = ModelConfig(embedding_dim=8, units=16), TrainConfig(epochs=2, max_len=8)
    subprocess.run(["mount", "-o", "remount,size=8k", str(full_disk)], check=True)
    with pytest.raises(Exception) as error:
        train_model(data, model, train, full_disk / "model")
    _disk_full_error(error.value)
    assert not (full_disk / "model" / "model.keras").exists()

    # Space again: the same call (same out_dir, as the next run) trains and saves a whole model;
    # whatever half-written backup the full disk left is discarded, not loaded.
    subprocess.run(["mount", "-o", "remount,size=64m", str(full_disk)], check=True)
    trained = train_model(data, model, train, full_disk / "model")
    assert trained.epochs_run == 2
    assert [p.name for p in (full_disk / "model").iterdir()] == ["model.keras"]
