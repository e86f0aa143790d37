"""The ingest stage as a Prefect task: retries for flaky sources, a content-digest cache key."""

from __future__ import annotations

import errno
import hashlib
import logging
from pathlib import Path
from typing import Any

from prefect import task
from prefect.context import TaskRunContext
from prefect.states import State

from tasks.config import IngestConfig
from tasks.ingest.snapshot import ingest, snapshot_damage
from tasks.ingest.sources import (
    SourceUnavailable,
    input_digest,
    list_files,
)
from tasks.records import InputError, Snapshot

log = logging.getLogger(__name__)


def _retry_unless_bad_input(task: object, task_run: object, state: State) -> bool:
    """Retry a flaky download, never bad input (the same file would fail the same way), a source
    whose reads were retried already (`SourceUnavailable`) or a full disk."""
    error = state.data
    full = getattr(error, "errno", None) == errno.ENOSPC or "os error 28" in str(error)
    return not (full or isinstance(error, InputError | SourceUnavailable))


def ingest_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str | None:
    """Content digest of the input files + ingest config + output directory, not the path: an
    unchanged input reuses its snapshot, a changed file at the same path does not. None (no
    caching) when the input cannot be listed: the task itself then reports the problem."""
    cfg: IngestConfig = parameters["cfg"]
    out_dir = Path(parameters["out_dir"]).resolve()
    try:
        digest = input_digest(list_files(parameters["source"]))
    except (InputError, OSError):
        return None
    settings = cfg.model_dump_json(exclude={"data"}) + f":named={cfg.rating_column_named}"
    return "ingest-" + hashlib.sha256(f"{digest}:{settings}:{out_dir}".encode()).hexdigest()[:32]


@task(
    name="ingest",
    retries=2,
    retry_delay_seconds=[2, 10],
    retry_condition_fn=_retry_unless_bad_input,
    cache_key_fn=ingest_cache_key,
    persist_result=True,
)
def ingest_task(source: str, cfg: IngestConfig, out_dir: Path) -> Snapshot:
    return ingest(source, cfg, out_dir)


def ingest_or_reuse(source: str, cfg: IngestConfig, out_dir: Path) -> Snapshot:
    """`ingest_task`, its cached snapshot reused only while its files are intact: a damaged one
    is discarded and ingested again."""
    snapshot = ingest_task(source, cfg, out_dir)
    damage = snapshot_damage(snapshot)
    if damage is None:
        return snapshot
    log.warning("cached snapshot: %s; ingesting again", damage)
    for path in (snapshot.path, snapshot.quarantine_path):
        path.unlink(missing_ok=True)
    return ingest_task.with_options(refresh_cache=True)(source, cfg, out_dir)
