"""Tokenization on a 2-worker local Dask cluster gives the same files as the threaded run."""

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from flows.sharded import tokenize_on_dask
from tasks.config import IngestConfig, RunnerConfig, TokenizerConfig
from tasks.ingest.sample_data import write_sample_reviews
from tasks.ingest.snapshot import ingest
from tasks.tokenize.dataset import tokenize_snapshot

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_dask_output_is_identical_to_the_threaded_run(tmp_path: Path) -> None:
    source = write_sample_reviews(tmp_path / "reviews.csv", rows=3000, seed=3)
    # Small read chunks → a snapshot of several row groups → several shards.
    snapshot = ingest(str(source), IngestConfig(), tmp_path / "snapshots", chunk_bytes=64 << 10)
    assert pq.ParquetFile(snapshot.path).metadata.num_row_groups >= 4
    cfg = TokenizerConfig(vocab_size=500)

    threaded = tokenize_snapshot(snapshot.path, cfg, tmp_path / "threads")
    sharded = tokenize_on_dask(snapshot, cfg, tmp_path / "dask", RunnerConfig(dask_workers=2))

    assert sharded.digest == threaded.digest
    for name in ("vocab.json", "train.parquet", "val.parquet", "test.parquet"):
        assert (tmp_path / "dask" / name).read_bytes() == (tmp_path / "threads" / name).read_bytes()
    assert json.loads((tmp_path / "dask" / "manifest.json").read_text()) == json.loads(
        (tmp_path / "threads" / "manifest.json").read_text()
    )
    assert sum(sharded.reviews.values()) == snapshot.rows_ok
    assert not list(tmp_path.glob(".dask.tmp-*"))  # the shards' parts are cleaned up
