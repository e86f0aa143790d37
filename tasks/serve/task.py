"""Batch scoring as a Prefect task."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from tasks.records import Snapshot
from tasks.serve.batch import Mode, score_snapshot


@task(name="score")
def score_task(
    snapshot: Snapshot,
    model_files: tuple[Path, Path],
    mode: Mode,
    out: Path,
    top_k: int,
    max_len: int,
) -> int:
    return score_snapshot(snapshot.path, *model_files, mode, out, top_k, max_len)
