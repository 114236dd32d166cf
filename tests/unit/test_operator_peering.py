"""Reading kopf's peering status (`kube.peering.outranked`): only a live peer with a
higher priority outranks this replica."""

from __future__ import annotations

import datetime as dt

import pytest

from vocelio_operator.kube.peering import outranked

NOW = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)


def peer(priority: int, seen_s_ago: float, lifetime: int = 60) -> dict[str, object]:
    lastseen = NOW - dt.timedelta(seconds=seen_s_ago)
    return {"priority": priority, "lifetime": lifetime, "lastseen": lastseen.isoformat()}


@pytest.mark.parametrize(("status", "expected"), [
    ({}, False),
    ({"me": peer(0, 1)}, False),
    ({"me": peer(0, 1), "other": peer(10, 5)}, True),
    ({"me": peer(0, 1), "other": peer(10, 61)}, False),  # its record expired: it is gone
    ({"me": peer(0, 1), "other": peer(0, 1)}, False),  # equal priority: kopf's own warning case
    ({"me": peer(0, 1), "other": peer(-5, 1)}, False),
    ({"other": {"priority": "x", "lastseen": "nonsense"}}, False),
    ({"other": "not a peer"}, False),
])
def test_only_a_live_higher_priority_peer_outranks(status: dict[str, object], expected: bool) -> None:
    assert outranked(status, 0, NOW) is expected


def test_a_naive_timestamp_is_read_as_utc() -> None:
    status = {"other": {"priority": 5, "lifetime": 60, "lastseen": "2026-01-01T11:59:30"}}
    assert outranked(status, 0, NOW)
