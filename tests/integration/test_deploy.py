"""`reviewgru deploy` against a real Prefect server: the deployment, its schedule, one real run."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from prefect.blocks.notifications import CustomWebhookNotificationBlock
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound

from flows.events import notify_automation
from tasks.config import STAGES
from tasks.ingest.sample_data import write_sample_reviews

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_deploy_serves_the_schedule_and_runs_the_five_stages(
    tmp_path: Path, mlflow_store: str
) -> None:
    reviews = write_sample_reviews(tmp_path / "reviews.csv", rows=200, seed=6)
    config = tmp_path / "nightly.toml"
    config.write_text(
        f'workdir = "{tmp_path / "work"}"\n[ingest]\ndata = "{reviews}"\n'
        "[train]\nepochs = 1\nlearning_rate = 0.01\n"
    )
    # A webhook to a closed local port: the automation is what is tested, not the delivery.
    block_id = CustomWebhookNotificationBlock(
        name="reviewgru-test", url="http://127.0.0.1:9/", json_data={"text": "{{body}}"}
    ).save("ml-alerts", overwrite=True)
    with pytest.raises(ValueError, match="no such block"):
        notify_automation("reviewgru", "custom-webhook/no-such-block")
    served = subprocess.Popen(
        [str(Path(sys.executable).with_name("reviewgru")), "deploy", "--cron", "0 3 * * *",
         "--timezone", "Europe/Madrid", "--name", "nightly-test", "--config", str(config),
         "--notify", "custom-webhook/ml-alerts"],
        cwd=tmp_path, env=os.environ, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )  # fmt: skip
    try:
        with get_client(sync_client=True) as client:
            deadline = time.monotonic() + 120
            while True:
                try:
                    deployment = client.read_deployment_by_name("retrain/nightly-test")
                    break
                except ObjectNotFound:
                    assert served.poll() is None, served.stderr.read() if served.stderr else ""
                    assert time.monotonic() < deadline, "no deployment after 120 s"
                    time.sleep(1)

            schedule = deployment.schedules[0].schedule
            assert (schedule.cron, schedule.timezone) == ("0 3 * * *", "Europe/Madrid")
            assert deployment.schedules[0].active
            assert deployment.global_concurrency_limit is not None
            assert deployment.global_concurrency_limit.limit == 1
            assert deployment.parameters["config"]["train"]["epochs"] == 1
            assert deployment.parameters["config"]["ingest"]["data"] == str(reviews)
            assert "config" in deployment.parameter_openapi_schema["properties"]
            (automation,) = client.read_automations_by_name("reviewgru-reviewgru-notify")
            assert automation.enabled
            assert automation.trigger.expect == {
                "reviewgru.model.promoted", "reviewgru.model.rejected", "reviewgru.retrain.failed",
            }  # fmt: skip
            assert automation.trigger.match.model_dump() == {  # only this model's events
                "prefect.resource.id": "reviewgru.model.reviewgru"
            }
            assert automation.actions[0].block_document_id == block_id

            flow_run = run_deployment(deployment.id, timeout=600, poll_interval=2, as_subflow=False)
            assert flow_run.state is not None and flow_run.state.is_completed(), flow_run.state
            task_runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id]))
            )
            assert sorted(run.name.rsplit("-", 1)[0] for run in task_runs) == sorted(STAGES)
            assert all(run.state is not None and run.state.is_completed() for run in task_runs)
    finally:
        os.killpg(served.pid, 15)
        served.wait(timeout=60)


def test_prefect_yaml_deploys_to_a_process_work_pool_whose_worker_runs_it(
    tmp_path: Path, mlflow_store: str
) -> None:
    repo = Path(__file__).resolve().parents[2]
    prefect = str(Path(sys.executable).with_name("prefect"))
    env = {**os.environ, "REVIEWS_URI": "s3://reviews/2026/*.tsv.gz", "REVIEWGRU_HOME": str(repo)}
    for command in (
        [prefect, "work-pool", "create", "reviewgru-process", "--type", "process"],
        [prefect, "--no-prompt", "deploy", "--prefect-file", "docker/prefect.yaml",
         "--name", "nightly-process"],
    ):  # fmt: skip
        result = subprocess.run(
            command, cwd=repo, env=env, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]

    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("retrain/nightly-process")
    assert deployment.work_pool_name == "reviewgru-process"
    assert deployment.schedules[0].schedule.cron == "0 3 * * *"
    assert deployment.global_concurrency_limit is not None
    assert deployment.global_concurrency_limit.limit == 1
    assert deployment.parameters["config"]["ingest"]["data"] == "s3://reviews/2026/*.tsv.gz"

    # A worker of the pool picks up a triggered run and runs the five stages in a process of its
    # own, in the checkout the deployment's pull step names.
    reviews = write_sample_reviews(tmp_path / "reviews.csv", rows=200, seed=7)
    worker = subprocess.Popen(
        [prefect, "worker", "start", "--pool", "reviewgru-process"],
        cwd=tmp_path, env=os.environ, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )  # fmt: skip
    try:
        config = {
            "workdir": str(tmp_path / "work"),
            "ingest": {"data": str(reviews)},
            "train": {"epochs": 1, "learning_rate": 0.01},
            # One epoch on 200 reviews beats the unigram, not the bigram: a champion to check.
            "registry": {"must_beat": "unigram"},
        }
        flow_run = run_deployment(
            deployment.id, parameters={"config": config}, timeout=600, poll_interval=2,
            as_subflow=False,
        )  # fmt: skip
        assert flow_run.state is not None and flow_run.state.is_completed(), flow_run.state
        with get_client(sync_client=True) as client:
            task_runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id]))
            )
        assert sorted(run.name.rsplit("-", 1)[0] for run in task_runs) == sorted(STAGES)
        assert all(run.state is not None and run.state.is_completed() for run in task_runs)
        assert flow_run.work_pool_name == "reviewgru-process"
    finally:
        os.killpg(worker.pid, 15)
        worker.wait(timeout=60)
    # The run wrote where its parameters said, and registered in this test's MLflow store.
    assert list((tmp_path / "work" / "snapshots").glob("snapshot-*.parquet"))
    assert str(MlflowClient().get_model_version_by_alias("reviewgru", "champion").version) == "1"
