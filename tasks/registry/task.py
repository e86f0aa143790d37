"""The register stage as a Prefect task: register, then the gate's report as an artifact."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact

from tasks import tracking
from tasks.config import PipelineConfig
from tasks.records import Evaluation, Registration, TokenizedData, TrainedModel
from tasks.registry.gate_report import gate_markdown
from tasks.registry.register import register_model


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
