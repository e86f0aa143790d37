"""Runs left RUNNING by a dead process are failed by the next run of their model; live ones stay."""

import os
import socket
import subprocess
import time
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from tasks.config import STALE_RUN_AFTER_S
from tasks.run_liveness import (
    ENDED_TAG,
    HEARTBEAT_TAG,
    HOST_TAG,
    PID_TAG,
    PROCESS_STARTED_TAG,
    Heartbeat,
    fail_dead_runs,
)


def test_only_the_dead_runs_of_the_model_are_failed(tmp_path: Path) -> None:
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = MlflowClient()
    experiment = client.create_experiment("reviewgru", artifact_location=tmp_path.as_uri())

    def run(model: str, **tags: str) -> str:
        run_id = client.create_run(experiment, tags=tags).info.run_id
        client.log_param(run_id, "registry.model_name", model)
        return run_id

    exited = subprocess.Popen(["true"])
    exited.wait()
    here, now = socket.gethostname(), time.time()
    live = run("m")
    heartbeat = Heartbeat(live, every_s=3600)
    dead = run("m", **{HOST_TAG: here, PID_TAG: str(exited.pid), PROCESS_STARTED_TAG: "1"})
    # This pid is alive, but it is not the process that started the run (a reused pid).
    reused = run("m", **{HOST_TAG: here, PID_TAG: str(os.getpid()), PROCESS_STARTED_TAG: "1"})
    silent = run("m", **{HOST_TAG: "pod-7", HEARTBEAT_TAG: str(int(now - STALE_RUN_AFTER_S - 60))})
    beating = run("m", **{HOST_TAG: "pod-8", HEARTBEAT_TAG: str(int(now))})
    other_model = run("other", **{HOST_TAG: here, PID_TAG: str(exited.pid)})

    try:
        failed = fail_dead_runs("m")
    finally:
        heartbeat.stop()

    assert sorted(failed) == sorted([dead, reused, silent])
    status = {run_id: client.get_run(run_id).info.status for run_id in (live, *failed)}
    assert status == {live: "RUNNING", dead: "FAILED", reused: "FAILED", silent: "FAILED"}
    for run_id in (beating, other_model):
        assert client.get_run(run_id).info.status == "RUNNING"
    assert client.get_run(dead).data.tags[ENDED_TAG] == (
        f"its process {exited.pid} on {here} is gone (killed or crashed)"
    )
    silence = client.get_run(silent).data.tags[ENDED_TAG]
    assert silence.startswith("no heartbeat from pod-7 for 16 min")
    live_tags = client.get_run(live).data.tags
    assert (live_tags[HOST_TAG], live_tags[PID_TAG]) == (here, str(os.getpid()))
