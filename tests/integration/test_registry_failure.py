"""A registration that dies half way (its MLflow server killed) leaves the aliases as they were."""

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from tasks.ingest.sample_data import write_sample_reviews
from tasks.registry.history import read_history
from tests.integration.servers import free_port, wait_for_http

pytestmark = [pytest.mark.integration, pytest.mark.slow]


class Server:
    def __init__(self, start: Callable[[], None], kill: Callable[[], None]) -> None:
        self.start, self.kill = start, kill


@pytest.fixture
def mlflow_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    """A real `mlflow server` on 127.0.0.1 that the test can kill and restart."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1",
        "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
        "--artifacts-destination", str(tmp_path / "server-artifacts"),
    ]  # fmt: skip
    venv_bin = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{venv_bin}{os.pathsep}{os.environ['PATH']}"}
    servers: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        server = subprocess.Popen(command, env=env, start_new_session=True,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        servers.append(server)
        wait_for_http(f"{url}/health", server)

    def kill() -> None:
        for server in servers:
            if server.poll() is None:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait(timeout=30)

    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    mlflow.set_tracking_uri(url)  # in-process client too
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # fail fast once it is gone
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    start()
    yield Server(start, kill)
    kill()


def test_server_killed_during_register_moves_no_alias(
    tmp_path: Path, mlflow_server: Server
) -> None:
    reviewgru = str(Path(sys.executable).with_name("reviewgru"))
    reviews = write_sample_reviews(tmp_path / "reviews.csv", rows=300, seed=5)
    common = ["run", "--data", str(reviews), "--workdir", str(tmp_path / "work"), "--epochs", "1",
              "--learning-rate", "0.01", "--must-beat", "unigram"]  # fmt: skip
    first = subprocess.run([reviewgru, *common, "--json"], capture_output=True, text=True,
                           timeout=600, env=os.environ)  # fmt: skip
    assert first.returncode == 0, first.stderr[-3000:]
    assert json.loads(first.stdout.splitlines()[-1])["promoted"] is True

    # A second model that would become champion (forced), killed as its register stage starts.
    second = subprocess.Popen(
        [reviewgru, *common, "--seed", "7", "--force-promote"], stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL, text=True, env=os.environ,
    )  # fmt: skip
    assert second.stderr is not None
    killed = False
    for line in second.stderr:
        if "Task run 'evaluate" in line and "Completed" in line:
            mlflow_server.kill()
            killed = True
    assert second.wait(timeout=600) != 0
    assert killed, "the run never reached its register stage"

    mlflow_server.start()  # the same store, restarted
    client = MlflowClient()
    assert client.get_model_version_by_alias("reviewgru", "champion").version in ("1", 1)
    assert client.get_model_version_by_alias("reviewgru", "challenger").version in ("1", 1)
    # Killed before its aliases moved: no move to any other version was even recorded.
    moves = read_history(client, "reviewgru")
    assert {(move.alias, move.to_version) for move in moves} == {
        ("champion", "1"),
        ("challenger", "1"),
    }
