"""Ctrl-C and `docker stop` during training: the run stops, is recorded as stopped, and resumes.

Real signals to the real CLI: SIGINT to its whole process group (what a terminal's Ctrl-C does,
reaching the temporary Prefect server the CLI starts too), then SIGTERM to the process alone (what
`docker stop` and a Kubernetes eviction send).
"""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from prefect import get_client

from tasks.ingest.sample_data import write_sample_reviews
from tasks.run_liveness import ENDED_TAG
from tests.integration.backups import backed_up_epoch

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _signal_after_epoch(
    args: list[str], env: dict[str, str], log: Path, after: int, signum: int, group: bool
) -> subprocess.CompletedProcess[str]:
    """Run the CLI; once its training backup holds epoch `after`, send `signum`; its outcome."""
    workdir = Path(args[args.index("--workdir") + 1])
    command = [str(Path(sys.executable).with_name("reviewgru")), "run", *args]
    with log.open("w") as stderr:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=stderr, env=env, start_new_session=True,
            text=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 400
            while backed_up_epoch(workdir) < after:
                assert process.poll() is None, f"ended before epoch {after}:\n{log.read_text()}"
                assert time.monotonic() < deadline, f"no epoch {after} after 400 s"
                time.sleep(0.02)
            (os.killpg if group else os.kill)(process.pid, signum)
            stdout, _ = process.communicate(timeout=120)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    return subprocess.CompletedProcess(command, process.returncode, stdout, log.read_text())


def _assert_stopped(result: subprocess.CompletedProcess[str], name: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 128 + getattr(signal, name), result.stderr[-3000:]
    assert lines[-1].startswith(f"reviewgru: error: stopped by {name}; nothing was registered")
    assert "run the same command again to resume" in lines[-1].lower()
    assert "Traceback" not in result.stderr


def test_sigint_then_sigterm_stop_the_run_which_then_resumes(
    tmp_path: Path, mlflow_store: str
) -> None:
    reviews = write_sample_reviews(tmp_path / "reviews.csv", rows=400, seed=3)
    workdir = tmp_path / "work"
    args = ["--data", str(reviews), "--workdir", str(workdir), "--units", "16", "--epochs", "200"]
    # Ctrl-C: the CLI starts its own temporary Prefect server (no PREFECT_API_URL), in its own
    # session, so that the group's SIGINT does not stop the server before it records the crash.
    alone = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
    alone["PREFECT_HOME"] = str(tmp_path / "prefect")
    interrupted = _signal_after_epoch(
        args, alone, tmp_path / "int.log", 1, signal.SIGINT, group=True
    )

    _assert_stopped(interrupted, "SIGINT")
    stopped_at = backed_up_epoch(workdir)
    assert stopped_at >= 1  # the backup stays for the next run
    with sqlite3.connect(tmp_path / "prefect" / "prefect.db") as db:
        states = db.execute("select state_type from flow_run").fetchall()
    assert states in ([("CRASHED",)], [("CANCELLED",)])
    client = MlflowClient()
    experiments = [experiment.experiment_id for experiment in client.search_experiments()]
    (run,) = client.search_runs(experiments)
    assert run.info.status == "KILLED"
    assert "SIGINT" in run.data.tags[ENDED_TAG]
    assert client.search_registered_models() == []

    # docker stop: SIGTERM to the CLI alone, this time on the shared test server.
    terminated = _signal_after_epoch(
        args, dict(os.environ), tmp_path / "term.log", stopped_at + 1, signal.SIGTERM, group=False
    )

    _assert_stopped(terminated, "SIGTERM")
    assert f"resuming from epoch {stopped_at} (backup in " in terminated.stderr
    assert backed_up_epoch(workdir) > stopped_at
    runs = client.search_runs(experiments)
    assert sorted(run.info.status for run in runs) == ["KILLED", "KILLED"]
    assert client.search_registered_models() == []
    with get_client(sync_client=True) as prefect:
        (flow_run,) = [
            flow_run
            for flow_run in prefect.read_flow_runs()
            # Other tests' flows (score, tokenize-sharded) share the server and take no config.
            if flow_run.parameters.get("config", {}).get("workdir") == str(workdir)
        ]
    assert flow_run.state is not None and flow_run.state.type.value in ("CRASHED", "CANCELLED")
