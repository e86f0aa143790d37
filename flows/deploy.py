"""Scheduled retraining: serve the retrain flow as a Prefect deployment with a cron schedule.

At most one retrain runs at a time: a run that comes due while another is going is cancelled
(`CANCEL_NEW`), so a slow night never piles retrains onto the next. The schedule stays active
when the serving process stops (`pause_on_shutdown=False`): restart the process and it goes on.
"""

from __future__ import annotations

from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.schedules import Cron, Schedule
from prefect.types.entrypoint import EntrypointType

from flows.retrain import retrain
from tasks.config import PipelineConfig

ONE_RUN_AT_A_TIME = ConcurrencyLimitConfig(
    limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW
)


def cron_schedule(cron: str, timezone: str) -> Schedule:
    """The schedule; ValueError with Prefect's message for a bad cron or time zone."""
    return Cron(cron, timezone=timezone)


def serve_retrain(config: PipelineConfig, schedule: Schedule, name: str) -> None:
    """Register the deployment (config as editable flow parameters) and run its schedule."""
    parameters = config.model_dump(mode="json")
    if not config.ingest.rating_column_named:  # left out, it stays optional in scheduled runs
        del parameters["ingest"]["rating_column"]
    retrain.serve(
        name=name,
        schedules=[schedule],
        parameters={"config": parameters},
        global_limit=ONE_RUN_AT_A_TIME,
        pause_on_shutdown=False,
        tags=["reviewgru", "retrain"],
        description="Retrain the reviewgru GRU language model and register it in MLflow.",
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
