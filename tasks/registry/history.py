"""Alias history: every move of `champion` and `challenger`, when, from which version, and why.

Each move is one tag on the version the alias moved **to** (`alias.<alias>.<UTC time>`, a JSON
value): a version gets one or two of them, never a growing blob, and concurrent writers never
overwrite each other's moves. `read_history` gathers them from every version of the model.
Moving an alias anywhere else (`move_alias`) would leave a gap in this history.

Rollback targets are checked for comparability: a version may replace the champion only if
the two were evaluated on the same test split (same dataset digest), or one's gate re-scored the
other on its split (`gate.champion_version`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Literal

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from pydantic import BaseModel, ConfigDict

from tasks.records import InputError
from tasks.registry.versions import version_metrics

CHAMPION, CHALLENGER = "champion", "challenger"
TAG_PREFIX = "alias."
GATE_CHAMPION_TAG = "gate.champion_version"  # the champion a version's gate scored it against

Kind = Literal["registered", "promoted", "forced", "rollback"]


class AliasMove(BaseModel):
    model_config = ConfigDict(frozen=True)

    alias: str
    from_version: str | None  # None: the alias did not exist yet
    to_version: str
    at: datetime
    kind: Kind
    reason: str

    def tag(self) -> tuple[str, str]:
        """The version tag that records this move (key sorts by time for one alias)."""
        stamp = self.at.astimezone(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        value = {"from": self.from_version, "at": self.at.isoformat(), "kind": self.kind,
                 "reason": self.reason}  # fmt: skip
        return f"{TAG_PREFIX}{self.alias}.{stamp}", json.dumps(value)


def moves_from_tags(version: str, tags: Mapping[str, str]) -> list[AliasMove]:
    """The moves recorded on one version's tags."""
    moves = []
    for key, value in tags.items():
        if not key.startswith(TAG_PREFIX) or key.count(".") < 2:
            continue
        alias = key[len(TAG_PREFIX) :].split(".", 1)[0]
        record = json.loads(value)
        moves.append(
            AliasMove(
                alias=alias,
                from_version=record["from"],
                to_version=version,
                at=datetime.fromisoformat(record["at"]),
                kind=record["kind"],
                reason=record["reason"],
            )
        )
    return moves


def ordered(moves: Iterable[AliasMove]) -> list[AliasMove]:
    return sorted(moves, key=lambda move: (move.at, move.alias != CHALLENGER))


def previous_champion(moves: Iterable[AliasMove]) -> str | None:
    """The champion before the current one, as a stack: a rollback returns to the version it
    names and forgets the champions after it, so rolling back twice goes two steps back."""
    stack: list[str] = []
    for move in ordered(m for m in moves if m.alias == CHAMPION):
        if move.kind == "rollback" and move.to_version in stack:
            del stack[stack.index(move.to_version) + 1 :]
        else:
            stack.append(move.to_version)
    return stack[-2] if len(stack) > 1 else None


def comparable(
    target: str,
    champion: str,
    test_digests: Mapping[str, str | None],
    gate_champions: Mapping[str, str | None],
) -> bool:
    """Whether `target` and `champion` were ever evaluated on a comparable test split."""
    digest = test_digests.get(target)
    return (
        (digest is not None and digest == test_digests.get(champion))
        or gate_champions.get(champion) == target
        or gate_champions.get(target) == champion
    )


def history_rows(moves: Iterable[AliasMove]) -> list[dict[str, str]]:
    """Oldest first, for the CLI, the MLflow table and the Prefect UI."""
    return [
        {
            "at": move.at.astimezone(UTC).isoformat(timespec="seconds"),
            "alias": move.alias,
            "from": f"v{move.from_version}" if move.from_version else "-",
            "to": f"v{move.to_version}",
            "kind": move.kind,
            "reason": move.reason,
        }
        for move in ordered(moves)
    ]


def read_history(client: MlflowClient, model_name: str) -> list[AliasMove]:
    """Every recorded alias move of the model, oldest first."""
    moves: list[AliasMove] = []
    for mv in client.search_model_versions(f"name = '{model_name}'"):
        moves.extend(moves_from_tags(str(mv.version), mv.tags or {}))
    return ordered(moves)


def alias_version(client: MlflowClient, model_name: str, alias: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(model_name, alias).version)
    except MlflowException:
        return None


def move_alias(
    client: MlflowClient, model_name: str, alias: str, version: str, kind: Kind, reason: str
) -> AliasMove:
    """Point `alias` at `version` and record the move on that version."""
    move = AliasMove(
        alias=alias,
        from_version=alias_version(client, model_name, alias),
        to_version=version,
        at=datetime.now(UTC),
        kind=kind,
        reason=reason,
    )
    client.set_registered_model_alias(model_name, alias, version)
    client.set_model_version_tag(model_name, version, *move.tag())
    return move


def rollback(
    client: MlflowClient, model_name: str, to_version: str | None, why: str | None
) -> AliasMove:
    """Move `champion` back to `to_version` (default: the previous champion) and record why.

    Raises:
        InputError: no champion, no previous one, an unknown version, the champion itself, or a
            version never evaluated on a test split comparable with the champion's.
    """
    champion = alias_version(client, model_name, CHAMPION)
    if champion is None:
        raise InputError(f"{model_name} has no champion to roll back (run `reviewgru run` first)")
    found = client.search_model_versions(f"name = '{model_name}'")
    versions = {str(mv.version): mv for mv in found}
    moves = [m for v, mv in versions.items() for m in moves_from_tags(v, mv.tags or {})]
    target = to_version or previous_champion(moves)
    if target is None:
        raise InputError(
            f"{model_name} v{champion} is its first champion: nothing to roll back to "
            "(name a version with --to)"
        )
    if target not in versions:
        raise InputError(f"{model_name} has no version {target} (see `reviewgru compare`)")
    if target == champion:
        raise InputError(f"{model_name} v{target} is already the champion")
    test_digests = {v: version_metrics(client, mv)[1] for v, mv in versions.items()}
    gate_champions = {v: (mv.tags or {}).get(GATE_CHAMPION_TAG) for v, mv in versions.items()}
    if not comparable(target, champion, test_digests, gate_champions):
        raise InputError(
            f"{model_name} v{target} was never evaluated on a test split comparable with champion "
            f"v{champion}'s (other test data, and neither gate scored the other): retrain on "
            "the champion's data instead"
        )
    reason = f"rollback from v{champion}" + (f": {why}" if why else "")
    return move_alias(client, model_name, CHAMPION, target, "rollback", reason)
