"""Warm-start lineage on the registered versions: the init tags, the runs since the last scratch
version (for `train.scratch_every`), and each version's init as `compare` and `history` show it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from tasks.train.warm_start import INIT_TAG, PARENT_TAG, VOCAB_TAG


def registered_versions(model_name: str) -> list[tuple[int, dict[str, str]]]:
    """Every version's number and tags (none before the model's first registration)."""
    try:
        found = MlflowClient().search_model_versions(f"name = '{model_name}'")
    except MlflowException:
        return []
    return [(int(mv.version), dict(mv.tags or {})) for mv in found]


def runs_since_scratch(versions: Iterable[tuple[int, Mapping[str, str]]]) -> int | None:
    """Versions registered after the newest scratch-trained one; None when there is none.

    Versions without an init tag were trained before warm starts existed, hence from scratch.
    """
    modes = sorted((number, tags.get(INIT_TAG, "scratch")) for number, tags in versions)
    scratch = [number for number, mode in modes if mode == "scratch"]
    if not scratch:
        return None
    return sum(1 for number, _ in modes if number > scratch[-1])


def init_label(tags: Mapping[str, str]) -> str:
    """'warm from v3 (vocab remapped)', 'scratch', or '-' for versions from before warm starts."""
    mode = tags.get(INIT_TAG)
    if mode == "warm":
        return f"warm from v{tags.get(PARENT_TAG, '?')} (vocab {tags.get(VOCAB_TAG, '?')})"
    return mode or "-"


def version_inits(model_name: str) -> dict[str, str]:
    """Version → its init label."""
    return {str(number): init_label(tags) for number, tags in registered_versions(model_name)}
