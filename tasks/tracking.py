"""MLflow tracking: which store, the run, its params, dataset lineage and model metrics.

Everything goes through an explicit `MlflowClient` and run id rather than MLflow's thread-local
"active run", because Prefect may run a task in another thread than the flow.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.data.meta_dataset import MetaDataset
from mlflow.data.sources import LocalArtifactDatasetSource  # type: ignore[attr-defined]  # made at import
from mlflow.entities import DatasetInput, InputTag, Metric, Param, RunStatus, RunTag
from mlflow.tracking import MlflowClient

from tasks.config import PipelineConfig
from tasks.files import file_digest
from tasks.records import SPLITS, TokenizedData

log = logging.getLogger(__name__)

EMBEDDED_STORE_DIR = Path("mlruns")
EMBEDDED_TRACKING_URI = f"sqlite:///{EMBEDDED_STORE_DIR}/mlflow.db"
EXPERIMENT_NAME = "reviewgru"


def configure_mlflow() -> str:
    """Point MLflow at `MLFLOW_TRACKING_URI` when set, else the embedded SQLite store."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or EMBEDDED_TRACKING_URI
    if uri == EMBEDDED_TRACKING_URI:
        EMBEDDED_STORE_DIR.mkdir(exist_ok=True)
    mlflow.set_tracking_uri(uri)  # the registry follows it unless MLFLOW_REGISTRY_URI says else
    return uri


def ensure_experiment(client: MlflowClient, name: str = EXPERIMENT_NAME) -> str:
    """The experiment's id, created on first use."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    artifact_location = None
    uri = mlflow.get_tracking_uri()
    if uri.startswith("sqlite:///"):  # a local store keeps its artifacts beside its database
        database = Path(uri.removeprefix("sqlite:///"))
        artifact_location = (database.parent / "artifacts").resolve().as_uri()
    return client.create_experiment(name, artifact_location=artifact_location)


def start_run(config: PipelineConfig, flow_run_id: str | None) -> str:
    """Create the MLflow run for one retrain and log the whole config as params."""
    client = MlflowClient()
    run = client.create_run(
        ensure_experiment(client),
        run_name=f"retrain-{flow_run_id[:8]}" if flow_run_id else "retrain",
        tags={"prefect.flow_run_id": flow_run_id or "", "config.digest": config.digest()},
    )
    params = [Param(key, value[:6000]) for key, value in sorted(config.flat().items())]
    client.log_batch(run.info.run_id, params=params)
    return run.info.run_id


def run_link(run_id: str) -> str:
    """Where to see a run: a URL on a tracking server, else the command that opens the UI."""
    uri = mlflow.get_tracking_uri()
    if uri.startswith(("http://", "https://")):
        experiment_id = MlflowClient().get_run(run_id).info.experiment_id
        return f"{uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
    return f"run {run_id} (`mlflow ui --backend-store-uri {uri}`)"


def model_version_link(model_name: str, version: str) -> str:
    uri = mlflow.get_tracking_uri()
    if uri.startswith(("http://", "https://")):
        return f"{uri.rstrip('/')}/#/models/{model_name}/versions/{version}"
    return f"models:/{model_name}/{version}"


def finish_run(run_id: str, succeeded: bool) -> None:
    status = RunStatus.FINISHED if succeeded else RunStatus.FAILED
    MlflowClient().set_terminated(run_id, RunStatus.to_string(status))


def log_metrics(run_id: str, metrics: dict[str, float], step: int = 0) -> None:
    timestamp = int(time.time() * 1000)
    batch = [Metric(key, float(value), timestamp, step) for key, value in metrics.items()]
    MlflowClient().log_batch(run_id, metrics=batch)


def log_model_metrics(
    run_id: str, model_id: str, metrics: dict[str, float], dataset: str, dataset_digest: str
) -> None:
    """Metrics of a LoggedModel measured on a dataset input of the run (split name + digest, as
    `log_tokenized_inputs` logged it): the Models tab and the version page show them."""
    timestamp = int(time.time() * 1000)
    batch = [
        Metric(key, float(value), timestamp, 0, model_id=model_id, dataset_name=dataset,
               dataset_digest=dataset_digest, run_id=run_id)
        for key, value in metrics.items()
    ]  # fmt: skip
    MlflowClient().log_batch(run_id, metrics=batch)


def set_tags(run_id: str, tags: dict[str, str]) -> None:
    MlflowClient().log_batch(run_id, tags=[RunTag(key, value) for key, value in tags.items()])


def log_artifact(run_id: str, path: Path) -> None:
    MlflowClient().log_artifact(run_id, str(path))


def log_tokenized_inputs(run_id: str, data: TokenizedData) -> None:
    """Record the three splits as MLflow dataset inputs (lineage by path and digest)."""
    inputs = []
    for split in SPLITS:
        path = data.split_path(split)
        dataset = MetaDataset(  # type: ignore[abstract]  # `profile` is optional in practice
            LocalArtifactDatasetSource(str(path.resolve())), name=split, digest=file_digest(path)
        )
        context = "training" if split == "train" else ("validation" if split == "val" else split)
        inputs.append(
            DatasetInput(
                dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", context)]
            )
        )
    MlflowClient().log_inputs(run_id, datasets=inputs)


def log_side_by_side(run_id: str, rows: list[dict[str, str]]) -> None:
    """The rows as an MLflow table on the run (the Evaluation tab can compare runs by it)."""
    if rows:
        mlflow.log_table(pd.DataFrame(rows), artifact_file="gate/side_by_side.json", run_id=run_id)
