"""The champion: which version holds the alias, and its files, downloaded once per run.

The flow resolves the champion before the data report and hands the `Champion` record (local
paths) to the stages that compare against it, so no stage reaches back into the registry.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from tasks.records import Champion
from tasks.registry.history import CHAMPION
from tasks.registry.lineage import registered_versions, runs_since_scratch
from tasks.registry.versions import logged_model_id

log = logging.getLogger(__name__)

DATA_STATS_TAG = "data.stats"


def champion_version(model_name: str) -> str | None:
    try:
        return str(MlflowClient().get_model_version_by_alias(model_name, CHAMPION).version)
    except MlflowException:
        return None


def download_model_files(model_uri: str, dst: Path) -> tuple[Path, Path]:
    """A registered model's Keras file and vocab.json, downloaded from its artifacts."""
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(dst)))
    return local / "artifacts" / "model.keras", local / "artifacts" / "vocab.json"


def resolve_champion(model_name: str, directory: Path) -> Champion | None:
    """The champion of `model_name` with its files under `directory`; None without one.

    A version's files never change, so a download kept from an earlier run is reused; a new one
    goes to a temporary directory first and is renamed into place whole.
    """
    version = champion_version(model_name)
    if version is None:
        return None
    client = MlflowClient()
    mv = client.get_model_version(model_name, version)
    # On the LoggedModel since the version tags keep only lineage; on the version before.
    model_id = logged_model_id(mv)
    tags = {**mv.tags, **(client.get_logged_model(model_id).tags if model_id else {})}
    stats = json.loads(tags[DATA_STATS_TAG]) if DATA_STATS_TAG in tags else None
    if stats is None:
        log.info("champion v%s has no %s tag: no drift report", version, DATA_STATS_TAG)
    local = directory / f"{model_name}-v{version}"
    done = local / "files.json"  # written last: its presence means the download is whole
    if not done.exists():
        directory.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{local.name}.", dir=directory))
        try:
            files = download_model_files(f"models:/{model_name}/{version}", tmp)
            relative = [str(path.relative_to(tmp)) for path in files]
            (tmp / done.name).write_text(json.dumps(relative))
            shutil.rmtree(local, ignore_errors=True)
            tmp.rename(local)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    keras_path, vocab_path = (local / name for name in json.loads(done.read_text()))
    return Champion(
        model_name=model_name,
        version=version,
        keras_path=keras_path,
        vocab_path=vocab_path,
        data_stats=stats,
        runs_since_scratch=runs_since_scratch(registered_versions(model_name)),
    )
