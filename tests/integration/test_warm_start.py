"""Warm start through the real flow: a champion on a corpus, then the grown corpus warm-started
from it (auto), a forced scratch retrain, and a diverging warm start stopped by the NaN guard."""

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
from mlflow.tracking import MlflowClient

from tasks.ingest.sample_data import write_sample_reviews

pytestmark = [pytest.mark.integration, pytest.mark.slow]

Cli = Callable[..., subprocess.CompletedProcess[str]]


def _run(reviewgru: Cli, *args: str) -> dict:
    result = reviewgru("run", *args, "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _versions() -> list[str]:
    return sorted(str(v.version) for v in MlflowClient().search_model_versions("name='reviewgru'"))


def test_second_run_warm_starts_from_the_first_champion(tmp_path: Path, reviewgru: Cli) -> None:
    grown = write_sample_reviews(tmp_path / "grown.csv", rows=330, seed=3)
    base = tmp_path / "base.csv"
    pl.read_csv(grown, infer_schema=False).head(300).write_csv(base)
    common = ["--workdir", str(tmp_path / "work"), "--epochs", "2", "--learning-rate", "0.01",
              "--must-beat", "unigram", "--units", "16"]  # fmt: skip

    first = _run(reviewgru, "--data", str(base), *common)
    assert first["init"] == {"init.mode": "scratch", "init.reason": "no champion yet"}
    assert (first["model_version"], first["promoted"]) == ("1", True)

    # The grown corpus, default init (auto): a champion of the same shape exists → warm start.
    warm = _run(reviewgru, "--data", str(grown), *common, "--warm-epochs", "1")
    init = warm["init"]
    assert (init["init.mode"], init["init.parent_version"]) == ("warm", "1")
    assert init["init.vocab"] in ("kept", "remapped")
    assert init["init.reason"].startswith("champion v1 has the same model shape")
    assert "rows from v1" in init["init.reason"]
    client = MlflowClient()
    run_tags = client.get_run(warm["mlflow_run_id"]).data.tags
    version_tags = client.get_model_version("reviewgru", warm["model_version"]).tags
    for tags in (run_tags, version_tags):
        assert {key: tags[key] for key in init} == init
    assert client.get_run(warm["mlflow_run_id"]).data.metrics["epochs_run"] == 1  # warm_epochs

    forced = _run(reviewgru, "--data", str(grown), *common, "--init", "scratch")
    assert forced["init"] == {"init.mode": "scratch", "init.reason": "train.init = scratch"}
    assert client.get_run(forced["mlflow_run_id"]).data.metrics["epochs_run"] == 2
    assert "init.parent_version" not in client.get_model_version("reviewgru", "3").tags

    compared = reviewgru("compare", "--json")
    assert compared.returncode == 0, compared.stderr[-3000:]
    inits = {row["version"]: row["init"] for row in json.loads(compared.stdout.splitlines()[-1])}
    assert inits == {"1": "scratch", "2": f"warm from v1 (vocab {init['init.vocab']})",
                     "3": "scratch"}  # fmt: skip
    assert f"warm from v1 (vocab {init['init.vocab']})" in reviewgru("compare").stdout
    history = reviewgru("history", "--json")
    assert history.returncode == 0, history.stderr[-3000:]
    rows = json.loads(history.stdout.splitlines()[-1])
    assert {(row["to"], row["init"]) for row in rows} >= {("v1", "scratch"), ("v3", "scratch")}
    assert ("v2", inits["2"]) in {(row["to"], row["init"]) for row in rows}

    # The NaN guard holds for warm starts: the run fails, nothing is registered.
    champion = str(client.get_model_version_by_alias("reviewgru", "champion").version)
    diverged = reviewgru("run", "--data", str(grown), *common, "--init", "champion",
                         "--warm-learning-rate", "1e37", "--force-promote", "--json")  # fmt: skip
    assert diverged.returncode == 1, diverged.stderr[-3000:]
    assert "NaN or Inf loss" in diverged.stderr
    assert _versions() == ["1", "2", "3"]
    assert str(client.get_model_version_by_alias("reviewgru", "champion").version) == champion
