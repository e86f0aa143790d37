"""Register the model in MLflow and decide, by the gate, whether it becomes the champion.

Order matters for failures: the model is logged, then registered and tagged, and only then do the
aliases move — a registration that dies half way leaves `challenger` and `champion` where they were.
"""

from __future__ import annotations

import json
import logging
import subprocess
import tempfile
from importlib.metadata import version as installed_version
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from tasks import tracking
from tasks.config import PipelineConfig, RegistryConfig
from tasks.evaluate.comparison import BOTH_KNOW, OWN_TOKENIZATION, SAME_TARGETS, read_comparison
from tasks.records import ChampionScore, Evaluation, Registration, TokenizedData, TrainedModel
from tasks.registry.champion import DATA_STATS_TAG
from tasks.registry.gate import ChampionEvidence, GateDecision, decide
from tasks.registry.gate_report import slice_rows
from tasks.registry.history import (
    CHALLENGER,
    CHAMPION,
    GATE_CHAMPION_TAG,
    history_rows,
    move_alias,
    read_history,
)
from tasks.registry.pyfunc import pyfunc_files
from tasks.registry.versions import TEST_DATASET, compare_versions, perplexity_chart

log = logging.getLogger(__name__)

SERVING_REQUIREMENTS = ("mlflow", "tensorflow", "keras", "polars", "pandas", "numpy", "pydantic")


def champion_evidence(champion: ChampionScore, comparison_path: Path) -> ChampionEvidence:
    """What the gate needs about the champion, read back from the evaluate stage's file."""
    scores, labels = read_comparison(comparison_path)
    if champion.same_vocabulary:
        where = SAME_TARGETS
    elif champion.shared_perplexity is not None:
        where = BOTH_KNOW
    else:
        where = OWN_TOKENIZATION
    return ChampionEvidence(champion.version, scores, labels, where)


def gate_decision(evaluation: Evaluation, rules: RegistryConfig) -> GateDecision:
    """The gate (tasks/registry/gate.py) on this run's evaluation."""
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


def _git_commit() -> str:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except OSError:
        return "unknown"
    return result.stdout.strip() or "unknown"


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


def version_description(promote: bool, reason: str) -> str:
    """The version page's description: what the gate decided and why, in one sentence."""
    verdict = "Promoted to champion" if promote else "Not promoted, the champion stays"
    return f"{verdict}: {reason}."


def register_model(
    run_id: str,
    trained: TrainedModel,
    data: TokenizedData,
    evaluation: Evaluation,
    config: PipelineConfig,
) -> Registration:
    name = config.registry.model_name
    # A LoggedModel named after the registered model: the Models tab lists it by that name.
    with mlflow.start_run(run_id=run_id), pyfunc_files(trained.path, data.vocab_path) as files:
        info = mlflow.pyfunc.log_model(
            name=name,
            **files,
            input_example=pd.DataFrame(
                {"text": ["this blender is"], "top_k": [config.serve.top_k]}
            ),
            pip_requirements=[f"{pkg}=={installed_version(pkg)}" for pkg in SERVING_REQUIREMENTS],
            # The run's params (the whole config) are copied onto the model; add the real size.
            params={"vocab.size": str(data.vocab_size)},
            tags={DATA_STATS_TAG: data_stats(data), "config.digest": config.digest()},
        )
    metrics = evaluation.metrics
    model_metrics = dict(metrics)
    if evaluation.champion is not None:
        model_metrics["champion_perplexity"] = evaluation.champion.perplexity
    tracking.log_model_metrics(
        run_id, info.model_id, model_metrics, TEST_DATASET, evaluation.test_digest
    )
    decision = gate_decision(evaluation, config.registry)
    promote, reason = decision.promoted, decision.reason
    # Lineage only: the metrics live on the LoggedModel, the reason in the description.
    tags = {
        "data.digest": data.digest,
        "training.digest": config.training_digest(data.digest),
        "code.version": _git_commit(),
        "gate.decision": "promoted" if promote else "rejected",
        **trained.init,  # warm or scratch, the parent version, the vocabulary kept or remapped
    }
    if evaluation.champion is not None:
        tags[GATE_CHAMPION_TAG] = evaluation.champion.version
    version = str(mlflow.register_model(info.model_uri, name, tags=tags).version)
    client = MlflowClient()
    client.update_model_version(name, version, description=version_description(promote, reason))
    client.set_tag(run_id, "gate.decision", tags["gate.decision"])
    client.set_tag(run_id, "gate.reason", reason)
    move_alias(client, name, CHALLENGER, version, "registered",
               f"newest version, trained on data {data.digest[:12]}")  # fmt: skip
    if promote:
        forced = config.registry.promotion == "force"
        move_alias(client, name, CHAMPION, version, "forced" if forced else "promoted", reason)
    log.info("registered %s v%s: %s", name, version, reason)
    log_registry_views(client, run_id, name)
    return Registration(
        model_name=name,
        version=version,
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


PERPLEXITY_CHART = "perplexity_by_version.png"
HISTORY_TABLE = "alias_history.json"


def log_registry_views(client: MlflowClient, run_id: str, model_name: str) -> None:
    """The perplexity chart over every version and the alias history, on this run."""
    with tempfile.TemporaryDirectory(prefix="reviewgru-views-") as tmp:
        chart = perplexity_chart(compare_versions(model_name), Path(tmp) / PERPLEXITY_CHART,
                                 model_name)  # fmt: skip
        client.log_artifact(run_id, str(chart))
    rows = history_rows(read_history(client, model_name))
    mlflow.log_table(pd.DataFrame(rows), artifact_file=HISTORY_TABLE, run_id=run_id)
