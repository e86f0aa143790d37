"""Tokenization sharded over a Dask cluster (`--task-runner dask`), through prefect-dask.

The shards' work is the same functions as the single-process run (`tasks/tokenize/dataset.py`), run
as Prefect tasks on Dask workers; the coordinator (vocabulary, manifest) runs in the flow. The
workers read and write the work directory: on a remote cluster it must be shared storage.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect_dask import DaskTaskRunner

from tasks.config import RunnerConfig, TokenizerConfig
from tasks.records import Snapshot, TokenizedData
from tasks.tokenize.dataset import tokenize_snapshot
from tasks.tokenize.task import map_as_tasks


@flow(name="tokenize-sharded")
def tokenize_sharded(snapshot: Snapshot, cfg: TokenizerConfig, out_dir: Path) -> TokenizedData:
    """The tokenize stage with each shard a task on this flow's task runner."""
    return tokenize_snapshot(snapshot.path, cfg, out_dir, mapper=map_as_tasks)


def dask_task_runner(runner: RunnerConfig) -> DaskTaskRunner:
    """The configured cluster, or a local one of `dask_workers` single-threaded processes."""
    if runner.dask_address:
        return DaskTaskRunner(address=runner.dask_address)
    return DaskTaskRunner(
        cluster_kwargs={
            "n_workers": runner.dask_workers,
            "threads_per_worker": 1,
            "processes": True,
            "dashboard_address": None,
        }
    )


def tokenize_on_dask(
    snapshot: Snapshot, cfg: TokenizerConfig, out_dir: Path, runner: RunnerConfig
) -> TokenizedData:
    # DaskTaskRunner is a TaskRunner[PrefectDaskFuture]; with_options is typed invariantly.
    task_runner = dask_task_runner(runner)
    return tokenize_sharded.with_options(task_runner=task_runner)(  # type: ignore[arg-type]
        snapshot, cfg, out_dir
    )
