"""Two retrains started at once on the embedded stores: serialized, never "database is locked"."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tasks.ingest.sample_data import write_sample_reviews

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_simultaneous_runs_are_serialized(tmp_path: Path, mlflow_store: str) -> None:
    reviews = write_sample_reviews(tmp_path / "reviews.csv", rows=200, seed=8)
    env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")  # the ephemeral server's own database
    command = [
        str(Path(sys.executable).with_name("reviewgru")), "run", "--data", str(reviews),
        "--workdir", str(tmp_path / "work"), "--epochs", "1", "--learning-rate", "0.01", "--json",
    ]  # fmt: skip
    runs = [
        subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=900) for run in runs]

    for run, (_, stderr) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, stderr[-3000:]
        assert "database is locked" not in stderr
    assert any("waiting for it to end" in stderr for _, stderr in outputs)
    summaries = [json.loads(stdout.strip().splitlines()[-1]) for stdout, _ in outputs]
    # The one that waited found the other's model: same data, same config, no second version.
    assert sorted(summary["cached"] for summary in summaries) == [False, True]
    assert {summary["model_version"] for summary in summaries} == {"1"}
    assert len(MlflowClient().search_model_versions("name = 'reviewgru'")) == 1
