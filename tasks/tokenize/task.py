"""The tokenize stage as Prefect tasks: the whole snapshot, or one shard per task (Dask)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar, cast

from prefect import task, unmapped
from prefect.cache_policies import NO_CACHE

from tasks.config import TokenizerConfig
from tasks.records import Snapshot, TokenizedData
from tasks.tokenize.dataset import tokenize_snapshot

_T = TypeVar("_T")
_R = TypeVar("_R")


@task(name="tokenize")
def tokenize_task(snapshot: Snapshot, cfg: TokenizerConfig, out_dir: Path) -> TokenizedData:
    return tokenize_snapshot(snapshot.path, cfg, out_dir)


@task(name="tokenize-shard", cache_policy=NO_CACHE)
def _shard_task(work: Callable[[_T], _R], item: _T) -> _R:
    return work(item)


def map_as_tasks(work: Callable[[_T], _R], items: list[_T]) -> list[_R]:
    """A `Mapper` running each item as a task on the flow's task runner (e.g. Dask workers)."""
    futures = _shard_task.map(unmapped(work), items)
    return [cast(_R, future.result()) for future in futures]
