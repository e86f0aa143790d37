"""Training killed with SIGKILL resumes from its last epoch; a diverging loss registers nothing."""

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from tasks.ingest.sample_data import write_sample_reviews
from tasks.run_liveness import ENDED_TAG
from tests.integration.backups import backed_up_epoch

pytestmark = [pytest.mark.integration, pytest.mark.slow]

Cli = Callable[..., subprocess.CompletedProcess[str]]

EPOCHS = "8"  # an epoch takes ~0.3 s here: ample time to kill the run after its first one


def _common(tmp_path: Path) -> list[str]:
    reviews = write_sample_reviews(tmp_path / "reviews.csv", rows=400, seed=3)
    return ["--data", str(reviews), "--workdir", str(tmp_path / "work"), "--units", "16"]


def _summary(result: subprocess.CompletedProcess[str]) -> dict:
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _kill_after_first_epoch(args: list[str], workdir: Path, log: Path) -> None:
    command = [str(Path(sys.executable).with_name("reviewgru")), "run", *args]
    with log.open("w") as stderr:
        process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=stderr, env=os.environ,
            start_new_session=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 300
            while backed_up_epoch(workdir) < 1:
                ended = process.poll() is not None
                assert not ended, f"ended before a backup:\n{log.read_text()[-3000:]}"
                assert time.monotonic() < deadline, "no backup after 300 s"
                time.sleep(0.02)
        finally:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL


def test_training_killed_mid_fit_resumes_from_its_last_epoch(
    tmp_path: Path, reviewgru: Cli
) -> None:
    # A few epochs on the tiny demo need not beat the bigram: this test is about resuming.
    args = [*_common(tmp_path), "--epochs", EPOCHS, "--learning-rate", "0.01", "--must-beat",
            "unigram"]  # fmt: skip
    _kill_after_first_epoch(args, tmp_path / "work", tmp_path / "killed.log")

    again = reviewgru("run", *args, "--json")

    summary = _summary(again)
    resumed = summary["resumed_from_epoch"]
    assert 1 <= resumed < int(EPOCHS)
    assert f"resuming from epoch {resumed} (backup in " in again.stderr
    assert (summary["model_version"], summary["promoted"]) == ("1", True)
    metrics = MlflowClient().get_run(summary["mlflow_run_id"]).data.metrics
    assert metrics["resumed_from_epoch"] == resumed
    assert resumed < metrics["epochs_run"] <= int(EPOCHS)
    assert not list((tmp_path / "work").glob("models/*/backup"))
    # The killed run was left RUNNING; the next run of the model marked it FAILED, saying why.
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    (killed,) = [run for run in runs if run.info.run_id != summary["mlflow_run_id"]]
    assert killed.info.status == "FAILED"
    assert killed.data.tags[ENDED_TAG].endswith("is gone (killed or crashed)")


def test_diverging_loss_fails_the_run_and_moves_no_alias(tmp_path: Path, reviewgru: Cli) -> None:
    common = [*_common(tmp_path), "--epochs", "1", "--must-beat", "unigram"]
    first = _summary(reviewgru("run", *common, "--learning-rate", "0.01", "--json"))
    assert (first["model_version"], first["promoted"]) == ("1", True)

    # Adam steps are ~learning_rate in size: at 1e37 the first step overflows the logits to
    # inf - inf = NaN (at 1e30 the loss is only huge, still finite). Forced promotion: had anything
    # been registered, the champion alias would have moved.
    diverged = reviewgru("run", *common, "--init", "scratch", "--learning-rate", "1e37",
                         "--force-promote", "--json")  # fmt: skip

    assert diverged.returncode == 1, diverged.stderr[-3000:]
    assert "NaN or Inf loss" in diverged.stderr
    client = MlflowClient()
    assert [str(v.version) for v in client.search_model_versions("name = 'reviewgru'")] == ["1"]
    aliases = client.get_registered_model("reviewgru").aliases
    assert {alias: str(version) for alias, version in aliases.items()} == {
        "champion": "1",
        "challenger": "1",
    }
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert sorted(run.info.status for run in runs) == ["FAILED", "FINISHED"]
