"""Two `reviewgru run` processes on 127.0.0.1 train one model under MultiWorkerMirroredStrategy.

The chief and a worker, each with its own TF_CONFIG, share the data and the work directory. The
chief alone writes the MLflow run and registers; the trained model matches one process trained
at the same global batch; a killed worker fails the chief with one line, and starting both again
resumes from the chief's backup.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from tasks.ingest.sample_data import write_sample_reviews
from tests.integration.backups import backed_up_epoch

pytestmark = [pytest.mark.integration, pytest.mark.slow]

Cli = Callable[..., subprocess.CompletedProcess[str]]

GLOBAL_BATCH = 16
EPOCHS = 4


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def _args(tmp_path: Path, workdir: Path, *extra: str) -> list[str]:
    reviews = tmp_path / "reviews.csv"
    if not reviews.exists():
        write_sample_reviews(reviews, rows=400, seed=3)
    return [
        "run", "--data", str(reviews), "--workdir", str(workdir), "--units", "16",
        "--batch-size", str(GLOBAL_BATCH), "--epochs", str(EPOCHS), "--json", *extra,
    ]  # fmt: skip


def _start_cluster(args: list[str], logs: Path) -> dict[str, subprocess.Popen[str]]:
    """The chief and one worker, each `reviewgru` with its TF_CONFIG; stderr in `logs`."""
    chief, worker = (f"127.0.0.1:{port}" for port in _free_ports(2))
    cluster = {"chief": [chief], "worker": [worker]}
    processes = {}
    for role in ("chief", "worker"):
        task = {"type": role, "index": 0}
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": cluster, "task": task}))
        processes[role] = subprocess.Popen(
            [str(Path(sys.executable).with_name("reviewgru")), *args, "--strategy", "multiworker"],
            stdout=subprocess.PIPE, stderr=(logs / f"{role}.log").open("w"), text=True, env=env,
            start_new_session=True,
        )  # fmt: skip
    return processes


def _finish(processes: dict[str, subprocess.Popen[str]], logs: Path) -> dict[str, dict]:
    """Each process's JSON summary, once both ended with exit code 0."""
    summaries = {}
    for role, process in processes.items():
        stdout, _ = process.communicate(timeout=600)
        log = (logs / f"{role}.log").read_text()
        assert process.returncode == 0, f"{role} exited {process.returncode}:\n{log[-3000:]}"
        summaries[role] = json.loads(stdout.strip().splitlines()[-1])
    return summaries


def _kill(processes: dict[str, subprocess.Popen[str]]) -> None:
    for process in processes.values():
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_two_workers_train_like_one_process_and_only_the_chief_registers(
    reviewgru: Cli, tmp_path: Path
) -> None:
    single = reviewgru(*_args(tmp_path, tmp_path / "single", "--model-name", "single"))
    assert single.returncode == 0, single.stderr[-3000:]
    single_summary = json.loads(single.stdout.strip().splitlines()[-1])

    logs = tmp_path / "logs"
    logs.mkdir()
    processes = _start_cluster(_args(tmp_path, tmp_path / "shared"), logs)
    try:
        summaries = _finish(processes, logs)
    finally:
        _kill(processes)
    chief, worker = summaries["chief"], summaries["worker"]

    # Only the chief writes an MLflow run and registers a version.
    assert chief["model_version"] == "1" and chief["mlflow_run_id"]
    assert worker["model_version"] is None and worker["mlflow_run_id"] is None
    client = MlflowClient()
    assert [str(v.version) for v in client.search_model_versions("name='reviewgru'")] == ["1"]
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    flow_runs = {run.data.tags.get("prefect.flow_run_id") for run in runs}
    assert worker["flow_run_id"] not in flow_runs
    assert {chief["flow_run_id"], single_summary["flow_run_id"]} == flow_runs
    assert client.get_run(chief["mlflow_run_id"]).data.params["train.strategy"] == "multiworker"

    # The global batch is split: each process computed its half of every batch.
    for role in ("chief", "worker"):
        log = (logs / f"{role}.log").read_text()
        assert f"2 workers, global batch {GLOBAL_BATCH} = {GLOBAL_BATCH // 2} rows per" in log

    # Summed gradients of the two halves are the one-process gradient of the whole batch.
    multi_perplexity = chief["metrics"]["test_perplexity"]
    single_perplexity = single_summary["metrics"]["test_perplexity"]
    ratio = multi_perplexity / single_perplexity
    assert abs(ratio - 1) < 0.05, (multi_perplexity, single_perplexity)


def test_a_killed_worker_fails_the_run_in_one_line_and_a_restart_resumes(
    reviewgru: Cli, tmp_path: Path
) -> None:
    config = tmp_path / "timeouts.toml"
    config.write_text("[runner]\ncollective_timeout_s = 20\n")
    workdir = tmp_path / "shared"
    args = _args(tmp_path, workdir, "--config", str(config))
    logs = tmp_path / "logs"
    logs.mkdir()

    processes = _start_cluster(args, logs)
    try:
        deadline = time.monotonic() + 400
        while backed_up_epoch(workdir) < 1:
            ended = {role: p.returncode for role, p in processes.items() if p.poll() is not None}
            assert not ended, f"ended before a backup: {ended}"
            assert time.monotonic() < deadline, "no backup after 400 s"
            time.sleep(0.05)
        os.killpg(processes["worker"].pid, signal.SIGKILL)
        processes["chief"].communicate(timeout=300)  # a hang fails here
    finally:
        _kill(processes)
    assert processes["chief"].returncode not in (0, None)
    last_line = (logs / "chief.log").read_text().strip().splitlines()[-1]
    assert "lost a worker" in last_line and "resume from the backup" in last_line, last_line

    (logs / "restart").mkdir()
    restarted = _start_cluster(args, logs / "restart")
    try:
        summaries = _finish(restarted, logs / "restart")
    finally:
        _kill(restarted)
    resumed = {role: summary["resumed_from_epoch"] for role, summary in summaries.items()}
    assert resumed["chief"] >= 1 and resumed["worker"] == resumed["chief"], resumed
    assert summaries["chief"]["model_version"] is not None
    assert backed_up_epoch(workdir) == 0  # the finished run deleted its backup
