"""Register the model in MLflow and decide, by the gate, whether it becomes the champion.

Order matters for failures: the model is logged, then registered and tagged, and only then do the
aliases move — a registration that dies half way leaves `challenger` and `champion` where they were.
"""

from __future__ import annotations

import json
import logging
import subprocess
from datetime import UTC, datetime
from importlib.metadata import version as installed_version
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.tracking import MlflowClient
from prefect import task
from prefect.artifacts import create_markdown_artifact

from tasks import tracking
from tasks.comparison import champion_evidence
from tasks.config import PipelineConfig, RegistryConfig
from tasks.gate import GateDecision, decide
from tasks.gate_report import gate_markdown, slice_rows
from tasks.next_word_model import INPUT_SCHEMA, OUTPUT_SCHEMA
from tasks.records import Evaluation, Registration, TokenizedData, TrainedModel

log = logging.getLogger(__name__)

TASKS_DIR = Path(__file__).parent
MODEL_CODE = TASKS_DIR / "next_word_model.py"
CHAMPION, CHALLENGER = "champion", "challenger"
SERVING_REQUIREMENTS = ("mlflow", "tensorflow", "keras", "polars", "pandas", "numpy", "pydantic")


def gate_decision(evaluation: Evaluation, rules: RegistryConfig) -> GateDecision:
    """The gate (tasks/gate.py) on this run's evaluation."""
    champion = None
    if evaluation.champion is not None:
        if evaluation.comparison_path is None:
            raise ValueError("the evaluation re-scored the champion but kept no per-review scores")
        champion = champion_evidence(evaluation.champion, evaluation.comparison_path)
    metrics = evaluation.metrics
    baselines = {name: metrics[f"{name}_perplexity"] for name in ("unigram", "bigram")}
    return decide(metrics["test_perplexity"], baselines, champion, rules)


def find_registered(model_name: str, training_digest: str) -> ModelVersion | None:
    """The version already trained on the same data with the same config, if any."""
    try:
        versions = MlflowClient().search_model_versions(
            f"name = '{model_name}' and tags.`training.digest` = '{training_digest}'"
        )
    except MlflowException:  # no such registered model yet
        return None
    return max(versions, key=lambda v: int(v.version), default=None)


def compare_versions(model_name: str) -> list[dict[str, object]]:
    """Every version of the model, newest first, with what users compare them by."""
    client = MlflowClient()
    aliases: dict[str, list[str]] = {}
    for alias, version in client.get_registered_model(model_name).aliases.items():
        aliases.setdefault(str(version), []).append(alias)

    def metric(tags: dict[str, str], key: str) -> float | None:
        value = tags.get(f"metrics.{key}")
        return float(value) if value is not None else None

    rows: list[dict[str, object]] = []
    for mv in client.search_model_versions(f"name = '{model_name}'"):
        tags = mv.tags
        rows.append(
            {
                "version": str(mv.version),
                "aliases": sorted(aliases.get(str(mv.version), [])),
                "test_perplexity": metric(tags, "test_perplexity"),
                "test_top1": metric(tags, "test_top1"),
                "test_top5": metric(tags, "test_top5"),
                "unigram_perplexity": metric(tags, "unigram_perplexity"),
                "bigram_perplexity": metric(tags, "bigram_perplexity"),
                "champion_perplexity": metric(tags, "champion_perplexity"),
                "data_digest": tags.get("data.digest"),
                "created": datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC).isoformat(
                    timespec="seconds"
                ),
                "gate_decision": tags.get("gate.decision"),
                "gate_reason": tags.get("gate.reason"),
                "run_id": mv.run_id,
            }
        )
    return sorted(rows, key=lambda row: -int(str(row["version"])))


def champion_version(model_name: str) -> str | None:
    try:
        return str(MlflowClient().get_model_version_by_alias(model_name, CHAMPION).version)
    except MlflowException:
        return None


def download_model_files(model_uri: str, dst: Path) -> tuple[Path, Path]:
    """A registered model's Keras file and vocab.json, downloaded from its artifacts."""
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(dst)))
    return local / "artifacts" / "model.keras", local / "artifacts" / "vocab.json"


def _git_commit() -> str:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=TASKS_DIR, capture_output=True, text=True, timeout=5
        )
    except OSError:
        return "unknown"
    return result.stdout.strip() or "unknown"


DATA_STATS_TAG = "data.stats"


def data_stats(data: TokenizedData) -> str:
    """The tokenized data's sizes and lengths, as a model version tag (a few hundred bytes)."""
    return json.dumps(
        {
            "reviews": data.reviews,
            "tokens": data.tokens,
            "oov_rate": data.oov_rate,
            "lengths": data.length_percentiles,
        }
    )


def register_model(
    run_id: str,
    trained: TrainedModel,
    data: TokenizedData,
    evaluation: Evaluation,
    config: PipelineConfig,
) -> Registration:
    name = config.registry.model_name
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(MODEL_CODE),
            artifacts={"keras_model": str(trained.path), "vocab": str(data.vocab_path)},
            code_paths=[str(TASKS_DIR)],
            signature=ModelSignature(inputs=INPUT_SCHEMA, outputs=OUTPUT_SCHEMA),
            input_example=pd.DataFrame({"text": ["this blender is"], "top_k": [5]}),
            pip_requirements=[f"{pkg}=={installed_version(pkg)}" for pkg in SERVING_REQUIREMENTS],
        )
    metrics = evaluation.metrics
    decision = gate_decision(evaluation, config.registry)
    promote, reason = decision.promoted, decision.reason
    tags = {
        "data.digest": data.digest,
        "data.test_digest": evaluation.test_digest,
        DATA_STATS_TAG: data_stats(data),
        "config.digest": config.digest(),
        "training.digest": config.training_digest(data.digest),
        "code.version": _git_commit(),
        "mlflow.run_id": run_id,
        "gate.decision": "promoted" if promote else "rejected",
        "gate.reason": reason,
        **{f"metrics.{key}": repr(float(value)) for key, value in metrics.items()},
    }
    if evaluation.champion is not None:
        tags["metrics.champion_perplexity"] = repr(evaluation.champion.perplexity)
        tags["gate.champion_version"] = evaluation.champion.version
    version = mlflow.register_model(info.model_uri, name, tags=tags).version
    client = MlflowClient()
    client.set_tag(run_id, "gate.decision", tags["gate.decision"])
    client.set_tag(run_id, "gate.reason", reason)
    client.set_registered_model_alias(name, CHALLENGER, version)
    if promote:
        client.set_registered_model_alias(name, CHAMPION, version)
    log.info("registered %s v%s: %s", name, version, reason)
    return Registration(
        model_name=name,
        version=str(version),
        model_uri=f"models:/{name}/{version}",
        promoted=promote,
        reason=reason,
        interval=(
            (decision.interval.point, decision.interval.low, decision.interval.high)
            if decision.interval
            else None
        ),
        slices=slice_rows(decision),
    )


@task(name="register")
def register_task(
    run_id: str,
    trained: TrainedModel,
    data: TokenizedData,
    evaluation: Evaluation,
    config: PipelineConfig,
) -> Registration:
    registration = register_model(run_id, trained, data, evaluation, config)
    decision = "promoted to champion" if registration.promoted else "not promoted"
    create_markdown_artifact(
        key="reviewgru-gate",
        markdown=gate_markdown(
            registration,
            evaluation,
            run_link=tracking.run_link(run_id),
            version_link=tracking.model_version_link(registration.model_name, registration.version),
        ),
        description=f"{registration.model_name} v{registration.version}: {decision}",
    )
    return registration
