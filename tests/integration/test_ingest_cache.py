"""The ingest task's cache is keyed on the input's content, not its path."""

from pathlib import Path

import pytest
from prefect import flow

from tasks.config import IngestConfig
from tasks.ingest.sample_data import write_sample_reviews
from tasks.ingest.task import ingest_or_reuse, ingest_task

pytestmark = pytest.mark.integration


@flow
def _ingest_twice(source: str, out_dir: Path) -> list[tuple[str, str]]:
    """(state name, snapshot digest) of two ingest runs of the same source."""
    results = []
    for _ in range(2):
        state = ingest_task(source, IngestConfig(), out_dir, return_state=True)
        results.append((state.name, state.result().digest))
    return results


@flow
def _ingest_or_reuse(source: str, out_dir: Path) -> bool:
    """Whether the snapshot `ingest_or_reuse` returns exists."""
    return ingest_or_reuse(source, IngestConfig(), out_dir).path.exists()


def test_unchanged_input_reuses_its_snapshot_a_changed_one_does_not(tmp_path: Path) -> None:
    source = write_sample_reviews(tmp_path / "reviews.csv", rows=300, seed=1)
    first = _ingest_twice(str(source), tmp_path / "out")
    assert [name for name, _ in first] == ["Completed", "Cached"]
    assert first[0][1] == first[1][1]

    # Same path, new content: a miss, then a hit on the new content.
    write_sample_reviews(source, rows=300, seed=2)
    second = _ingest_twice(str(source), tmp_path / "out")
    assert [name for name, _ in second] == ["Completed", "Cached"]
    assert second[0][1] != first[0][1]

    # The snapshot deleted behind the cache's back: recomputed, not a dangling path.
    for snapshot in (tmp_path / "out").glob("snapshot-*.parquet"):
        snapshot.unlink()
    assert _ingest_or_reuse(str(source), tmp_path / "out")
