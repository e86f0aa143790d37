"""Register the model in MLflow and decide, by the gate, whether it becomes the champion.

Order matters for failures: the model is logged, then registered and tagged, and only then do the
aliases move — a registration that dies half way leaves `challenger` and `champion` where they were.
"""

from __future__ import annotations

import logging
import subprocess
from importlib.metadata import version as installed_version
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.tracking import MlflowClient
from prefect import task

from tasks.config import PipelineConfig
from tasks.next_word_model import INPUT_SCHEMA, OUTPUT_SCHEMA
from tasks.records import ChampionScore, Evaluation, Registration, TokenizedData, TrainedModel

log = logging.getLogger(__name__)

TASKS_DIR = Path(__file__).parent
MODEL_CODE = TASKS_DIR / "next_word_model.py"
CHAMPION, CHALLENGER = "champion", "challenger"
SERVING_REQUIREMENTS = ("mlflow", "tensorflow", "keras", "polars", "pandas", "numpy", "pydantic")


def decide_promotion(
    perplexity: float,
    unigram_perplexity: float,
    champion: ChampionScore | None,
    min_improvement: float = 0.0,
) -> tuple[bool, str]:
    """Whether the challenger becomes champion, and why, in one sentence."""
    if perplexity >= unigram_perplexity:
        return False, (
            f"perplexity {perplexity:.2f} does not beat the unigram baseline "
            f"{unigram_perplexity:.2f}"
        )
    if champion is None:
        return True, (
            f"no champion yet; perplexity {perplexity:.2f} beats the unigram baseline "
            f"{unigram_perplexity:.2f}"
        )
    needed = champion.perplexity * (1.0 - min_improvement)
    if perplexity < needed:
        return True, (
            f"perplexity {perplexity:.2f} beats champion v{champion.version} "
            f"({champion.perplexity:.2f}) on the same test split"
        )
    return False, (
        f"perplexity {perplexity:.2f} does not beat champion v{champion.version} "
        f"({champion.perplexity:.2f}, needed < {needed:.2f}) on the same test split"
    )


def champion_version(model_name: str) -> str | None:
    try:
        return str(MlflowClient().get_model_version_by_alias(model_name, CHAMPION).version)
    except MlflowException:
        return None


def download_champion(model_name: str, version: str, dst: Path) -> tuple[Path, Path]:
    """The champion's Keras model and vocab.json, downloaded from its registered artifacts."""
    local = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{model_name}/{version}", dst_path=str(dst)
        )
    )
    return local / "artifacts" / "model.keras", local / "artifacts" / "vocab.json"


def _git_commit() -> str:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=TASKS_DIR, capture_output=True, text=True, timeout=5
        )
    except OSError:
        return "unknown"
    return result.stdout.strip() or "unknown"


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
    promote, reason = decide_promotion(
        metrics["test_perplexity"],
        metrics["unigram_perplexity"],
        evaluation.champion,
        config.registry.min_improvement,
    )
    tags = {
        "data.digest": data.digest,
        "data.test_digest": evaluation.test_digest,
        "config.digest": config.digest(),
        "code.version": _git_commit(),
        "mlflow.run_id": run_id,
        "gate.decision": "promoted" if promote else "rejected",
        "gate.reason": reason,
        **{f"metrics.{key}": f"{value:.6g}" for key, value in metrics.items()},
    }
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
    )


@task(name="register")
def register_task(
    run_id: str,
    trained: TrainedModel,
    data: TokenizedData,
    evaluation: Evaluation,
    config: PipelineConfig,
) -> Registration:
    return register_model(run_id, trained, data, evaluation, config)
