"""One retrain at a time on the embedded stores.

Prefect's ephemeral server and MLflow's SQLite store are files: two processes writing them at once
risk "database is locked" (prefect#18934, mlflow#6490). A CLI run that uses either takes an
exclusive lock beside it first; a second run waits, saying so, and then goes on. Runs against real
servers (PREFECT_API_URL, a non-SQLite MLflow URI) take no lock: the servers serialize writes.
"""

from __future__ import annotations

import fcntl
import os
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path


def embedded_store_locks(
    mlflow_uri: str, prefect_api_url: str | None, prefect_home: Path
) -> list[Path]:
    """The lock files for the embedded stores this run would write, in a fixed order."""
    locks = []
    if not prefect_api_url:
        locks.append(prefect_home / "reviewgru-ephemeral.lock")
    if mlflow_uri.startswith("sqlite:///"):
        locks.append(Path(mlflow_uri.removeprefix("sqlite:///")).with_suffix(".lock"))
    return locks


@contextmanager
def exclusive(paths: list[Path]) -> Iterator[None]:
    with ExitStack() as stack:
        for path in paths:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = stack.enter_context(path.open("a"))
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                sys.stderr.write(f"another retrain is using {path.parent}; waiting for it to end\n")
                fcntl.flock(handle, fcntl.LOCK_EX)
            handle.write(f"{os.getpid()}\n")
            handle.flush()
        yield
