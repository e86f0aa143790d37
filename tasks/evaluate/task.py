"""The evaluate stage as a Prefect task: the evaluation, its metrics and table to MLflow."""

from __future__ import annotations

from prefect import task

from tasks import tracking
from tasks.config import PipelineConfig
from tasks.evaluate.metrics import evaluate_model
from tasks.records import Champion, Evaluation, TokenizedData, TrainedModel


@task(name="evaluate")
def evaluate_task(
    trained: TrainedModel,
    data: TokenizedData,
    config: PipelineConfig,
    run_id: str,
    champion: Champion | None = None,
) -> Evaluation:
    evaluation = evaluate_model(trained, data, config.train.max_len, config.registry, champion)
    tracking.log_side_by_side(run_id, evaluation.side_by_side)
    logged = dict(evaluation.metrics)
    rescored = evaluation.champion
    if rescored is not None:
        logged["champion_perplexity"] = rescored.perplexity
        if rescored.shared_perplexity is not None:
            logged["champion_shared_perplexity"] = rescored.shared_perplexity
            logged["challenger_shared_perplexity"] = rescored.challenger_shared_perplexity or 0.0
    tracking.log_metrics(run_id, logged)
    return evaluation
