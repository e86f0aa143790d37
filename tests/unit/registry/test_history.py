"""Alias history's pure logic: the tag round trip, the previous champion, comparability."""

from datetime import UTC, datetime, timedelta

from mlflow.entities import Metric

from tasks.registry.history import (
    AliasMove,
    comparable,
    history_rows,
    moves_from_tags,
    previous_champion,
)
from tasks.registry.register import version_description
from tasks.registry.versions import latest_metrics

T0 = datetime(2026, 11, 4, 3, 0, tzinfo=UTC)


def _move(alias: str, old: str | None, new: str, day: int, kind: str = "promoted") -> AliasMove:
    return AliasMove(alias=alias, from_version=old, to_version=new,
                     at=T0 + timedelta(days=day), kind=kind, reason=f"day {day}")  # type: ignore[arg-type]  # fmt: skip


def test_a_move_survives_its_version_tag() -> None:
    move = _move("champion", "2", "3", 1)
    key, value = move.tag()

    assert key == "alias.champion.20261105T030000.000000Z"
    assert moves_from_tags("3", {key: value, "data.digest": "abc", "gate.decision": "x"}) == [move]


def test_previous_champion_walks_back_one_step_per_rollback() -> None:
    moves = [_move("champion", None, "1", 0), _move("champion", "1", "2", 1),
             _move("challenger", "2", "3", 2), _move("champion", "2", "3", 2)]  # fmt: skip
    assert previous_champion(moves) == "2"

    moves.append(_move("champion", "3", "2", 3, kind="rollback"))
    assert previous_champion(moves) == "1"

    moves.append(_move("champion", "2", "1", 4, kind="rollback"))
    assert previous_champion(moves) is None  # back at the first champion


def test_previous_champion_of_a_first_champion_is_none() -> None:
    assert previous_champion([_move("champion", None, "1", 0)]) is None
    assert previous_champion([]) is None


def test_comparable_means_the_same_test_split_or_a_gate_between_them() -> None:
    digests = {"1": "aaa", "2": "aaa", "3": "bbb", "4": None}
    gates = {"1": None, "2": "1", "3": "2", "4": None}

    assert comparable("1", "2", digests, gates)  # same split
    assert comparable("2", "3", digests, gates)  # v3's gate scored v2 on v3's split
    assert comparable("3", "2", digests, gates)  # and the other way round
    assert not comparable("1", "3", digests, gates)  # other data, never scored against each other
    assert not comparable("4", "1", digests, gates)  # never evaluated


def test_history_rows_are_oldest_first_with_challenger_before_champion() -> None:
    rows = history_rows([_move("champion", "1", "2", 1), _move("challenger", "1", "2", 1),
                         _move("champion", None, "1", 0)])  # fmt: skip

    assert [(r["alias"], r["from"], r["to"]) for r in rows] == [
        ("champion", "-", "v1"),
        ("challenger", "v1", "v2"),
        ("champion", "v1", "v2"),
    ]
    assert rows[0]["at"] == "2026-11-04T03:00:00+00:00"


def test_latest_metrics_keep_the_last_value_and_the_test_digest() -> None:
    metrics = [
        Metric("test_perplexity", 9.0, 1, 0, dataset_name="test", dataset_digest="d1"),
        Metric("test_perplexity", 4.0, 2, 0, dataset_name="test", dataset_digest="d1"),
        Metric("train_tokens_per_s", 100.0, 1, 0),
    ]

    assert latest_metrics(metrics) == ({"test_perplexity": 4.0, "train_tokens_per_s": 100.0}, "d1")


def test_the_version_description_is_one_sentence_with_the_reason() -> None:
    assert version_description(False, "perplexity 3.10 does not beat champion v1 (2.90)") == (
        "Not promoted, the champion stays: perplexity 3.10 does not beat champion v1 (2.90)."
    )
