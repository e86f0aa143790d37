"""Team mode for real: MLflow and Prefect servers on PostgreSQL, started by `docker/local-team.sh`.

The test makes its own databases on the local PostgreSQL (127.0.0.1:5432, trust auth), runs the
flow through both servers, checks the result in each, and drops the databases. Its connection
URL carries a password, which must never reach MLflow params/tags, Prefect parameters or logs.
"""

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.settings import PREFECT_API_URL, temporary_settings

from tasks.ingest.sample_data import write_sample_reviews
from tests.integration.servers import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SECRET = "team-db-S3cret"
PG = f"postgresql://postgres:{SECRET}@127.0.0.1:5432"


def _psql(sql: str) -> None:
    subprocess.run(["psql", f"{PG}/postgres", "-qc", sql], check=True, capture_output=True)


@pytest.fixture
def team_servers(tmp_path: Path) -> Iterator[dict[str, str]]:
    suffix = uuid.uuid4().hex[:8]
    mlflow_port, prefect_port = free_port(), free_port()
    env = {
        **os.environ,
        "PG_URL": PG,
        "MLFLOW_DB": f"rg_test_mlflow_{suffix}",
        "PREFECT_DB": f"rg_test_prefect_{suffix}",
        "MLFLOW_PORT": str(mlflow_port),
        "PREFECT_PORT": str(prefect_port),
        "TEAM_DIR": str(tmp_path / "team"),
        "VENV_BIN": str(Path(sys.executable).parent),
    }
    env.pop("PREFECT_API_URL", None)
    script = str(REPO / "docker" / "local-team.sh")
    try:
        up = subprocess.run([script, "up"], env=env, capture_output=True, text=True, timeout=300)
        assert up.returncode == 0, up.stdout + up.stderr
        yield {
            "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{mlflow_port}",
            "PREFECT_API_URL": f"http://127.0.0.1:{prefect_port}/api",
        }
    finally:
        subprocess.run([script, "down"], env=env, capture_output=True, timeout=120)
        for database in (env["MLFLOW_DB"], env["PREFECT_DB"]):
            _psql(f'drop database if exists "{database}" with (force)')


def test_flow_runs_through_postgres_backed_servers_and_leaks_no_secret(
    tmp_path: Path, team_servers: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in team_servers.items():
        monkeypatch.setenv(key, value)
    mlflow.set_tracking_uri(team_servers["MLFLOW_TRACKING_URI"])  # in-process client too
    reviews = write_sample_reviews(tmp_path / "reviews.csv", rows=200, seed=9)
    result = subprocess.run(
        [str(Path(sys.executable).with_name("reviewgru")), "run", "--data", str(reviews),
         "--workdir", str(tmp_path / "work"), "--epochs", "1", "--learning-rate", "0.01",
         "--must-beat", "unigram", "--json"],
        env=os.environ, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])

    # This process' Prefect settings point at the session's test server; ask the team server.
    api_url = team_servers["PREFECT_API_URL"]
    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as prefect:
        flow_run = prefect.read_flow_run(summary["flow_run_id"])
        assert flow_run.state is not None and flow_run.state.is_completed()
        run_logs = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run.id]))
        logs: list = []
        while page := prefect.read_logs(run_logs, limit=200, offset=len(logs)):
            logs.extend(page)
        artifacts = prefect.read_artifacts(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id]))
        )
    assert {"reviewgru-data-report", "reviewgru-run-summary", "reviewgru-metrics",
            "reviewgru-gate", "reviewgru-mlflow-run"} <= {a.key for a in artifacts}  # fmt: skip
    report = json.loads(next(a for a in artifacts if a.key == "reviewgru-data-report").data)
    assert {"what": "rows read", "value": 200} in report
    link = next(a for a in artifacts if a.key == "reviewgru-mlflow-run").data
    assert summary["mlflow_run_id"] in str(link)
    messages = [log.message for log in logs]
    assert any(m.startswith("trained 1 epochs") for m in messages), (len(messages), messages[-20:])
    registry = MlflowClient()
    champion = registry.get_model_version_by_alias("reviewgru", "champion")
    assert str(champion.version) == summary["model_version"] == "1"
    run = registry.get_run(summary["mlflow_run_id"])
    assert run.data.params["train.epochs"] == "1"
    assert logs, "the flow's logs reached the Prefect server"

    stored = json.dumps(
        [run.data.params, run.data.tags, champion.tags, flow_run.parameters,
         messages, result.stdout, result.stderr],
    )  # fmt: skip
    assert SECRET not in stored


@pytest.fixture
def direct_postgres_uri() -> Iterator[str]:
    """A throwaway database on the local PostgreSQL as a direct MLflow store URI."""
    database = f"rg_test_direct_{uuid.uuid4().hex[:8]}"
    _psql(f'create database "{database}"')
    try:
        yield f"{PG}/{database}"
    finally:
        mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])  # the test's own again
        _psql(f'drop database if exists "{database}" with (force)')


def test_run_with_a_direct_postgresql_tracking_uri(
    tmp_path: Path, direct_postgres_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`MLFLOW_TRACKING_URI=postgresql://…` (MLflow's direct database store, no server) needs
    the driver SQLAlchemy picks for that URL (psycopg 3): a real run registers through it."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", direct_postgres_uri)
    reviews = write_sample_reviews(tmp_path / "reviews.csv", rows=200, seed=9)
    result = subprocess.run(
        [str(Path(sys.executable).with_name("reviewgru")), "run", "--data", str(reviews),
         "--workdir", str(tmp_path / "work"), "--epochs", "1", "--json"],
        env=os.environ, cwd=tmp_path, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["rows"] == {"read": 200, "ok": 200, "quarantined": 0, "duplicates": 0}
    mlflow.set_tracking_uri(direct_postgres_uri)
    registry = MlflowClient()
    version = registry.get_model_version("reviewgru", summary["model_version"])
    assert version.run_id == summary["mlflow_run_id"] and summary["model_version"] == "1"
    assert registry.get_run(summary["mlflow_run_id"]).data.params["train.epochs"] == "1"
    assert SECRET not in result.stdout + result.stderr
