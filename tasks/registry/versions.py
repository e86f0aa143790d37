"""The registered versions as users compare them: metrics read from each version's LoggedModel.

MLflow 3 keeps a model's evaluation on the model itself (metrics logged with `model_id` and the test
dataset), which is what the experiment's Models tab, the version page and
`mlflow.search_logged_models(order_by=…)` show; the version tags keep only lineage.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

from mlflow.entities import Metric
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from tasks.registry.lineage import init_label

log = logging.getLogger(__name__)

TEST_DATASET = "test"  # the name the test split is logged under (tasks/tracking.py)
CHART_METRICS = ("test_perplexity", "bigram_perplexity", "unigram_perplexity")


def latest_metrics(metrics: list[Metric]) -> tuple[dict[str, float], str | None]:
    """Each metric's last value, and the digest of the test dataset they were measured on."""
    values: dict[str, float] = {}
    test_digest = None
    for metric in sorted(metrics, key=lambda m: (m.timestamp, m.step)):
        values[metric.key] = metric.value
        if metric.dataset_name == TEST_DATASET and metric.dataset_digest:
            test_digest = metric.dataset_digest
    return values, test_digest


def logged_model_id(mv: ModelVersion) -> str | None:
    """The LoggedModel a version was registered from (the SQL registry keeps it only as the
    version's source, `models:/<model_id>`)."""
    if mv.model_id:
        return str(mv.model_id)
    source = str(mv.source or "")
    return source.removeprefix("models:/") if source.startswith("models:/m-") else None


def version_metrics(client: MlflowClient, mv: ModelVersion) -> tuple[dict[str, float], str | None]:
    """A version's evaluation metrics and test-split digest, from its LoggedModel.

    Versions registered before the metrics moved to the model carry them as `metrics.*` tags.
    """
    if model_id := logged_model_id(mv):
        try:
            metrics, digest = latest_metrics(client.get_logged_model(model_id).metrics or [])
        except MlflowException:  # the logged model was deleted
            metrics, digest = {}, None
        if metrics:
            return metrics, digest
    tags = mv.tags or {}
    legacy = {k.removeprefix("metrics."): float(v) for k, v in tags.items() if k[:8] == "metrics."}
    return legacy, tags.get("data.test_digest")


def version_aliases(client: MlflowClient, model_name: str) -> dict[str, list[str]]:
    """Version → its aliases (`search_model_versions` leaves `aliases` empty: mlflow#9783)."""
    aliases: dict[str, list[str]] = {}
    for alias, version in client.get_registered_model(model_name).aliases.items():
        aliases.setdefault(str(version), []).append(alias)
    return aliases


def compare_versions(model_name: str) -> list[dict[str, object]]:
    """Every version of the model, newest first, with what users compare them by."""
    client = MlflowClient()
    aliases = version_aliases(client, model_name)
    rows: list[dict[str, object]] = []
    for mv in client.search_model_versions(f"name = '{model_name}'"):
        tags = mv.tags
        metrics, test_digest = version_metrics(client, mv)
        rows.append(
            {
                "version": str(mv.version),
                "aliases": sorted(aliases.get(str(mv.version), [])),
                **{
                    key: metrics.get(key)
                    for key in (
                        "test_perplexity",
                        "test_top1",
                        "test_top5",
                        "unigram_perplexity",
                        "bigram_perplexity",
                        "champion_perplexity",
                    )
                },
                "data_digest": tags.get("data.digest"),
                "test_digest": test_digest,
                "created": datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC).isoformat(
                    timespec="seconds"
                ),
                "gate_decision": tags.get("gate.decision"),
                "init": init_label(tags),
                "gate_reason": mv.description or tags.get("gate.reason"),
                "model_id": logged_model_id(mv),
                "run_id": mv.run_id,
            }
        )
    return sorted(rows, key=lambda row: -int(str(row["version"])))


def perplexity_chart(rows: list[dict[str, object]], path: Path, model_name: str) -> Path:
    """Test perplexity and the two baselines over the registered versions, as a PNG.

    `rows` as from `compare_versions`; the champion's point is ringed. Perplexities of versions
    trained on other data are on other test splits: the baselines show how hard each split was.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    ordered = sorted(rows, key=lambda row: int(str(row["version"])))
    versions = [int(str(row["version"])) for row in ordered]
    figure, axis = plt.subplots(figsize=(8, 4))
    for key, style in zip(CHART_METRICS, ("o-", "s--", "^:"), strict=True):
        known = [(v, float(str(row[key]))) for v, row in zip(versions, ordered, strict=True)
                 if row[key] is not None]  # fmt: skip
        if known:
            axis.plot(*zip(*known, strict=True), style, label=key.replace("_", " "))
    for version, row in zip(versions, ordered, strict=True):
        if "champion" in cast(list[str], row["aliases"]) and row["test_perplexity"] is not None:
            perplexity = float(str(row["test_perplexity"]))
            axis.plot(version, perplexity, "o", ms=14, mfc="none", mec="tab:green", mew=2)
            axis.annotate("champion", (version, perplexity), (6, 8), textcoords="offset points",
                          color="tab:green")  # fmt: skip
    axis.set_xticks(versions)
    axis.set_xlabel("registered version")
    axis.set_ylabel("perplexity (lower is better)")
    axis.set_yscale("log")
    plain = FuncFormatter(lambda value, _: f"{value:g}")  # 2, 3, 4 rather than 2×10⁰
    axis.yaxis.set_major_formatter(plain)
    low, high = axis.get_ylim()
    if high / low < 10:  # within a decade only the minor ticks have labels; over more they crowd
        axis.yaxis.set_minor_formatter(plain)
    axis.set_title(f"{model_name}: test perplexity by version")
    axis.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path
