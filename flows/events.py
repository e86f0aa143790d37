"""What a retrain tells Prefect about its outcome: flow-run tags, events, and the automation that
turns those events into notifications.

Events (resource `reviewgru.model.<name>`, payload: model, version, reason, flow_run_id):
`reviewgru.model.promoted`, `reviewgru.model.rejected`, `reviewgru.retrain.failed`. A cached
rerun (same data, same config) registers nothing and emits nothing; its tag says `cached`.
"""

from __future__ import annotations

from uuid import UUID

from prefect import get_client
from prefect.events import emit_event
from prefect.events.actions import SendNotification
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
from prefect.exceptions import ObjectNotFound

PROMOTED, REJECTED, FAILED = (
    "reviewgru.model.promoted",
    "reviewgru.model.rejected",
    "reviewgru.retrain.failed",
)
NOTIFY_BODY = (
    "{{ event.event }}: {{ event.payload.model }} v{{ event.payload.version }}\n"
    "{{ event.payload.reason }}\nflow run {{ event.payload.flow_run_id }}"
)


def resource_id(model_name: str) -> str:
    return f"reviewgru.model.{model_name}"


def model_resource(model_name: str) -> dict[str, str]:
    return {"prefect.resource.id": resource_id(model_name),
            "prefect.resource.name": model_name}  # fmt: skip


def outcome_tags(model_name: str, data_digest: str | None, outcome: str | None) -> list[str]:
    """The flow run's tags: the runs list filters by model, data and outcome."""
    tags = [f"model:{model_name}"]
    if data_digest:
        tags.append(f"data:{data_digest[:8]}")
    if outcome:
        tags.append(outcome)
    return tags


def tag_flow_run(flow_run_id: str, tags: list[str]) -> None:
    """Add `tags` to the flow run's own (the deployment's stay)."""
    with get_client(sync_client=True) as client:
        current = client.read_flow_run(UUID(flow_run_id)).tags
        added = [tag for tag in tags if tag not in current]
        client.update_flow_run(UUID(flow_run_id), tags=[*current, *added])


def emit_outcome(
    event: str, model_name: str, version: str | None, reason: str, flow_run_id: str | None
) -> None:
    payload = {"model": model_name, "version": version, "reason": reason,
               "flow_run_id": flow_run_id}  # fmt: skip
    related = []
    if flow_run_id:
        related = [{"prefect.resource.id": f"prefect.flow-run.{flow_run_id}",
                    "prefect.resource.role": "flow-run"}]  # fmt: skip
    emit_event(event, resource=model_resource(model_name), related=related, payload=payload)


def automation_name(model_name: str) -> str:
    return f"reviewgru-{model_name}-notify"


def notify_automation(model_name: str, block: str) -> UUID:
    """Create (or replace) the automation that sends this model's events to a notification block.

    `block` is `<block-type-slug>/<block-name>`, e.g. `slack-webhook/ml-alerts`.

    Raises:
        ValueError: `block` is not of that form or names no saved block.
    """
    block_type, _, name = block.partition("/")
    if not block_type or not name:
        raise ValueError(f"--notify {block!r}: expected <block-type>/<block-name>, e.g. "
                         "slack-webhook/ml-alerts")  # fmt: skip
    with get_client(sync_client=True) as client:
        try:
            document = client.read_block_document_by_name(name, block_type)
        except ObjectNotFound:
            raise ValueError(
                f"--notify {block!r}: no such block; create it in the Prefect UI (Blocks) or "
                "with `prefect block register` and a saved instance"
            ) from None
        for existing in client.read_automations_by_name(automation_name(model_name)):
            client.delete_automation(existing.id)
        return client.create_automation(
            AutomationCore(
                name=automation_name(model_name),
                description=f"Sends {model_name}'s promotions, rejections and failed retrains "
                f"to {block}.",
                trigger=EventTrigger(
                    expect={PROMOTED, REJECTED, FAILED},
                    match={"prefect.resource.id": resource_id(model_name)},
                    posture=Posture.Reactive,
                    threshold=1,
                ),
                actions=[
                    SendNotification(
                        block_document_id=document.id,
                        subject="reviewgru: {{ event.event }} ({{ event.payload.model }})",
                        body=NOTIFY_BODY,
                    )
                ],
            )
        )
