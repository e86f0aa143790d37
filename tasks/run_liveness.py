"""MLflow runs that died without ending: found and marked FAILED by the next run of their model.

A SIGKILL, an OOM kill or a lost machine leaves a run RUNNING forever. Each retrain's run
records who runs it (host, process id and the process's start time, so a reused pid does not
pass for the old process) and a heartbeat tag renewed every `HEARTBEAT_S` while it lives. The next
run of the same model checks every RUNNING run of that model: on this host its process must still
exist; a run from another host (another container, another machine) must have beaten within
`STALE_RUN_AFTER_S`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time

from mlflow.entities import Run, RunStatus
from mlflow.tracking import MlflowClient

from tasks.config import HEARTBEAT_S, STALE_RUN_AFTER_S

log = logging.getLogger(__name__)

HOST_TAG = "reviewgru.host"
PID_TAG = "reviewgru.pid"
PROCESS_STARTED_TAG = "reviewgru.process_started"
HEARTBEAT_TAG = "reviewgru.heartbeat"
ENDED_TAG = "reviewgru.ended_because"


def _process_started(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux); "" where unknown."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            # Field 22; the command name (field 2) may hold spaces, so count after its ")".
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _alive(pid: int, started: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        pass
    return not started or _process_started(pid) == started


class Heartbeat:
    """Tags `run_id` with this process, then renews its heartbeat tag every `every_s` until
    `stop()`."""

    def __init__(self, run_id: str, every_s: float = HEARTBEAT_S) -> None:
        self.client = MlflowClient()
        self.run_id = run_id
        pid = os.getpid()
        for key, value in (
            (HOST_TAG, socket.gethostname()),
            (PID_TAG, str(pid)),
            (PROCESS_STARTED_TAG, _process_started(pid)),
        ):
            self.client.set_tag(run_id, key, value)
        self._beat()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._beat_until_stopped, args=(every_s,), name="mlflow-heartbeat", daemon=True
        )
        self._thread.start()

    def _beat(self) -> None:
        self.client.set_tag(self.run_id, HEARTBEAT_TAG, str(int(time.time())))

    def _beat_until_stopped(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            with contextlib.suppress(Exception):  # a missed beat is made up by the next one
                self._beat()

    def stop(self) -> None:
        self._stop.set()
        # Not waited for long: a beat stuck retrying an unreachable tracking server must not hold
        # up the run's end (the thread is a daemon).
        self._thread.join(timeout=1)


def death_reason(run: Run, now: float | None = None) -> str | None:
    """Why `run` (RUNNING) is dead, or None while it may be alive."""
    tags = run.data.tags
    if tags.get(HOST_TAG) == socket.gethostname() and tags.get(PID_TAG, "").isdigit():
        pid = int(tags[PID_TAG])
        if _alive(pid, tags.get(PROCESS_STARTED_TAG, "")):
            return None
        return f"its process {pid} on {tags[HOST_TAG]} is gone (killed or crashed)"
    beat = tags.get(HEARTBEAT_TAG)
    last = int(beat) if beat and beat.isdigit() else run.info.start_time // 1000
    silent = (time.time() if now is None else now) - last
    if silent <= STALE_RUN_AFTER_S:
        return None
    host = tags.get(HOST_TAG, "an unknown host")
    return f"no heartbeat from {host} for {silent / 60:.0f} min (killed or the machine was lost)"


def fail_dead_runs(model_name: str) -> list[str]:
    """Mark the dead RUNNING runs of `model_name` FAILED, tagged with why; their ids."""
    client = MlflowClient()
    experiments = [experiment.experiment_id for experiment in client.search_experiments()]
    if not experiments:
        return []
    running = client.search_runs(
        experiments,
        filter_string=(
            f"attributes.status = 'RUNNING' and params.`registry.model_name` = '{model_name}'"
        ),
    )
    failed = []
    for run in running:
        reason = death_reason(run)
        if reason is None:
            continue
        client.set_tag(run.info.run_id, ENDED_TAG, reason)
        client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.FAILED))
        log.warning("MLflow run %s was left RUNNING: %s; marked FAILED", run.info.run_id, reason)
        failed.append(run.info.run_id)
    return failed


def end_killed(run_id: str, reason: str) -> None:
    """End `run_id` as KILLED: stopped on request (a signal), not failed."""
    client = MlflowClient()
    client.set_tag(run_id, ENDED_TAG, reason)
    client.set_terminated(run_id, RunStatus.to_string(RunStatus.KILLED))
