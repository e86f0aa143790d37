"""The batch scoring flow: a review file in, predictions or per-review perplexity out."""

from __future__ import annotations

import tempfile
from pathlib import Path

from prefect import flow
from pydantic import BaseModel

from tasks import tracking
from tasks.config import PipelineConfig
from tasks.ingest.task import ingest_task
from tasks.registry.champion import download_model_files
from tasks.serve.batch import Mode
from tasks.serve.task import score_task


class ScoreSummary(BaseModel):
    model_uri: str
    mode: Mode
    out: Path
    rows: dict[str, int]
    rows_written: int


@flow(name="score")
def score(
    source: str,
    out: Path,
    model_uri: str,
    mode: Mode = "perplexity",
    top_k: int | None = None,
    config: PipelineConfig | None = None,
) -> ScoreSummary:
    """Validate the reviews like a retrain does, then score them with a registered model."""
    config = config or PipelineConfig()
    tracking.configure_mlflow()
    snapshot = ingest_task(source, config.ingest, config.workdir / "snapshots")
    with tempfile.TemporaryDirectory(prefix="reviewgru-score-") as tmp:
        files = download_model_files(model_uri, Path(tmp))
        top_k = top_k or config.serve.top_k
        written = score_task(snapshot, files, mode, out, top_k, config.train.max_len)
    return ScoreSummary(
        model_uri=model_uri,
        mode=mode,
        out=out,
        rows=snapshot.row_counts(),
        rows_written=written,
    )
