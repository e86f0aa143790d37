"""One Prefect test server for the whole session, and a fresh MLflow store per test."""

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import mlflow
import pytest
from prefect.settings import PREFECT_API_URL
from prefect.testing.utilities import prefect_test_harness


@pytest.fixture(scope="session", autouse=True)
def prefect_server() -> Iterator[str]:
    """The test server's API URL; exported so that CLI subprocesses use it too."""
    with prefect_test_harness(server_startup_timeout=120):
        url = PREFECT_API_URL.value()
        os.environ["PREFECT_API_URL"] = url
        yield url
        del os.environ["PREFECT_API_URL"]


@pytest.fixture
def mlflow_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    (tmp_path / "mlruns").mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    mlflow.set_tracking_uri(uri)
    return uri


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    command = [str(Path(sys.executable).with_name("reviewgru")), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=os.environ)


@pytest.fixture
def reviewgru(mlflow_store: str) -> Callable[..., subprocess.CompletedProcess[str]]:
    """The real CLI in a subprocess, against the test Prefect server and this test's MLflow."""
    return _run_cli
