"""The retrain flow: the table of contents of reviewgru.

ingest → tokenize → train → evaluate → register, each a Prefect task in its stage package's
`task.py`. The flow only chains them, times them, opens the MLflow run, resolves the champion
once for the stages that compare against it, and reports.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from mlflow.tracking import MlflowClient
from prefect import Flow, flow
from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_table_artifact,
)
from prefect.client.schemas.objects import FlowRun
from prefect.logging.loggers import flow_run_logger
from prefect.runtime import flow_run
from prefect.states import State
from pydantic import BaseModel

from flows import events
from flows.sharded import tokenize_on_dask
from tasks import run_liveness, tracking
from tasks.config import STAGES, PipelineConfig, RegistryConfig
from tasks.evaluate.task import evaluate_task
from tasks.ingest.sample_data import demo_dataset
from tasks.ingest.task import ingest_or_reuse
from tasks.registry.champion import champion_version, resolve_champion
from tasks.registry.gate import bigram_ratio, bigram_verdict
from tasks.registry.register import find_registered
from tasks.registry.task import register_task
from tasks.registry.versions import version_metrics
from tasks.tokenize.data_report import champion_drift, data_report
from tasks.tokenize.task import tokenize_task
from tasks.train.distributed import trains_as_worker
from tasks.train.task import train_task

# The stages log through `logging.getLogger(__name__)` (so they run without Prefect); with
# PREFECT_LOGGING_EXTRA_LOGGERS=tasks their INFO lines also land in the flow run's log.
logging.getLogger("tasks").setLevel(logging.INFO)


class RunSummary(BaseModel):
    """What one retrain did; `reviewgru run --json` prints it. Stages not run stay None."""

    flow_run_id: str | None = None
    mlflow_run_id: str | None = None
    model_name: str
    model_version: str | None = None
    promoted: bool | None = None
    gate_reason: str | None = None
    data_digest: str | None = None  # the tokenized data's (the snapshot's with --until ingest)
    rows: dict[str, int] | None = None
    tokens: dict[str, int] | None = None
    metrics: dict[str, float | None] | None = None
    timings_s: dict[str, float | None] = {stage: None for stage in (*STAGES, "total")}
    train_tokens_per_s: float | None = None
    resumed_from_epoch: int | None = None
    # How training started: init.mode (warm|scratch), init.reason, init.parent_version, init.vocab.
    init: dict[str, str] | None = None
    cached: bool = False
    # Said plainly when the GRU loses to the bigram baseline (registry/gate.py:bigram_verdict).
    baseline_warning: str | None = None


@contextmanager
def _timed(timings: dict[str, float | None], stage: str) -> Iterator[None]:
    started = time.perf_counter()
    yield
    timings[stage] = round(time.perf_counter() - started, 3)


def _log_failure(flow: Flow[..., Any], flow_run: FlowRun, state: State) -> None:
    """on_failure hook: one clear summary line in the run's log (wire alerts to it, see README)."""
    parameters = flow_run.parameters.get("config") or {}
    model = (parameters.get("registry") or {}).get("model_name", RegistryConfig().model_name)
    events.emit_outcome(events.FAILED, model, None, str(state.message), str(flow_run.id))
    flow_run_logger(flow_run, flow).error(
        "retrain of %s failed: %s — nothing was registered and the aliases are unchanged unless "
        "the log above says otherwise",
        model,
        state.message,
    )


@flow(
    name="retrain",
    flow_run_name="retrain-{config.registry.model_name}",
    on_failure=[_log_failure],
)
def retrain(config: PipelineConfig | None = None) -> RunSummary:
    """Retrain the GRU language model on the configured reviews and register it in MLflow."""
    config = config or PipelineConfig()
    started = time.perf_counter()
    summary = RunSummary(flow_run_id=flow_run.get_id(), model_name=config.registry.model_name)
    timings = summary.timings_s
    try:
        _run_stages(config, summary, timings)
    finally:
        timings["total"] = round(time.perf_counter() - started, 3)
    _report(summary)
    _announce(summary)
    return summary


def _announce(summary: RunSummary) -> None:
    """Flow-run tags to filter the runs list by, and the outcome as a Prefect event."""
    outcome = None
    if summary.model_version is not None:
        outcome = "cached" if summary.cached else ("promoted" if summary.promoted else "rejected")
    if summary.flow_run_id:
        tags = events.outcome_tags(summary.model_name, summary.data_digest, outcome)
        events.tag_flow_run(summary.flow_run_id, tags)
    if outcome in ("promoted", "rejected"):
        events.emit_outcome(
            events.PROMOTED if outcome == "promoted" else events.REJECTED,
            summary.model_name,
            summary.model_version,
            summary.gate_reason or "",
            summary.flow_run_id,
        )


def _run_stages(
    config: PipelineConfig, summary: RunSummary, timings: dict[str, float | None]
) -> None:
    workdir = config.workdir
    source = config.ingest.data or str(demo_dataset(workdir / "demo", config.ingest.demo_rows))
    with _timed(timings, "ingest"):
        snapshot = ingest_or_reuse(source, config.ingest, workdir / "snapshots")
    summary.data_digest = snapshot.digest
    summary.rows = snapshot.row_counts()
    if not config.runs_stage("tokenize"):
        return
    with _timed(timings, "tokenize"):
        out_dir = workdir / "tokenized" / snapshot.digest
        if config.runner.task_runner == "dask":
            data = tokenize_on_dask(snapshot, config.tokenizer, out_dir, config.runner)
        else:
            data = tokenize_task(snapshot, config.tokenizer, out_dir)
    summary.tokens = dict(data.tokens)
    summary.data_digest = data.digest  # as the version's data.digest tag and `compare`
    if config.runs_stage("train") and trains_as_worker(config.train):
        # The chief writes the MLflow run and registers; this worker only trains its share.
        with _timed(timings, "train"):
            trained = train_task(data, config, None, None)
        summary.train_tokens_per_s = round(trained.tokens_per_s, 1)
        summary.resumed_from_epoch = trained.resumed_from_epoch
        return
    tracking.configure_mlflow()
    # Resolved once: the data report and evaluate compare against the same downloaded files.
    champion = resolve_champion(config.registry.model_name, workdir / "champions")
    create_table_artifact(
        key="reviewgru-data-report",
        table=data_report(snapshot, data, champion_drift(champion, data)),
        description=f"Snapshot {snapshot.digest}, tokenized data {data.digest[:16]}",
    )
    if not config.runs_stage("train"):
        return

    if config.until == "register" and _reuse_registered(config, data.digest, summary):
        return
    run_liveness.fail_dead_runs(config.registry.model_name)
    run_id = tracking.start_run(config, summary.flow_run_id)
    summary.mlflow_run_id = run_id
    heartbeat = run_liveness.Heartbeat(run_id)
    succeeded: bool | None = False
    try:
        tracking.log_tokenized_inputs(run_id, data)
        with _timed(timings, "train"):
            trained = train_task(data, config, run_id, champion)
        summary.train_tokens_per_s = round(trained.tokens_per_s, 1)
        summary.resumed_from_epoch = trained.resumed_from_epoch
        summary.init = trained.init
        if config.runs_stage("evaluate"):
            with _timed(timings, "evaluate"):
                evaluation = evaluate_task(trained, data, config, run_id, champion)
            rescored = evaluation.champion
            summary.metrics = {
                **{key: evaluation.metrics[key] for key in _METRIC_KEYS},
                "champion_perplexity": rescored.perplexity if rescored else None,
            }
            summary.baseline_warning = bigram_verdict(evaluation.metrics, data.tokens["train"])
            if config.runs_stage("register"):
                with _timed(timings, "register"):
                    registration = register_task(run_id, trained, data, evaluation, config)
                summary.model_version = registration.version
                summary.promoted = registration.promoted
                summary.gate_reason = registration.reason
        succeeded = True
    except BaseException as error:
        if not isinstance(error, Exception):  # a signal: stopped on request, resumable
            run_liveness.end_killed(run_id, f"{type(error).__name__}: {error}")
            succeeded = None
        raise
    finally:
        heartbeat.stop()
        if succeeded is not None:
            tracking.finish_run(run_id, succeeded)


def _reuse_registered(config: PipelineConfig, data_digest: str, summary: RunSummary) -> bool:
    """Idempotency: the same data and config were trained and registered before → no new version.

    Forced or disabled promotion always retrains: those are explicit requests for a new decision.
    """
    if config.registry.promotion != "gate":
        return False
    name = config.registry.model_name
    version = find_registered(name, config.training_digest(data_digest))
    if version is None:
        return False
    metrics, _ = version_metrics(MlflowClient(), version)
    summary.cached = True
    summary.mlflow_run_id = version.run_id
    summary.model_version = str(version.version)
    summary.promoted = champion_version(name) == str(version.version)
    summary.gate_reason = f"v{version.version} was trained on the same data with the same config"
    summary.metrics = {key: metrics.get(key) for key in (*_METRIC_KEYS, "champion_perplexity")}
    return True


_METRIC_KEYS = (
    "test_loss",
    "test_perplexity",
    "test_top1",
    "test_top5",
    "unigram_perplexity",
    "bigram_perplexity",
)


def _report(summary: RunSummary) -> None:
    """Stable-key artifacts: the UI shows each run's and their history side by side."""
    create_markdown_artifact(
        key="reviewgru-run-summary", markdown=_markdown(summary), description="Retrain summary"
    )
    if summary.metrics:
        table = [{"metric": key, "value": value} for key, value in summary.metrics.items()]
        ratio = bigram_ratio(summary.metrics)
        if ratio is not None:
            table.append({"metric": "GRU/bigram perplexity", "value": round(ratio, 3)})
        create_table_artifact(
            key="reviewgru-metrics",
            table=table,
            description=summary.baseline_warning
            or "Test metrics beside the baselines and the champion on the same split",
        )
    if summary.mlflow_run_id:
        link = tracking.run_link(summary.mlflow_run_id)
        if link.startswith("http"):
            create_link_artifact(key="reviewgru-mlflow-run", link=link, link_text="MLflow run")


def _markdown(summary: RunSummary) -> str:
    lines = ["# reviewgru retrain", "", "| | |", "|---|---|"]
    for key, value in summary.model_dump(exclude={"flow_run_id"}).items():
        lines.append(f"| {key} | {value} |")
    return "\n".join(lines)
