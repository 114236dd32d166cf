"""Timeouts are deadlines (issue #10, item 13), measured against real slow
upstreams: `timeouts.request_s` bounds the time to the response head (or the
504) across every attempt, connect and retry; `per_try_s` splits it into
attempts; a retry never starts with less than `retry_floor_s` left. Before,
a GET with a 2 s timeout and 3 attempts answered 504 after 6 s."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.harness.app_fixtures import Gateway, GatewayFactory, service
from tests.harness.breakers_tools import Switch, hanging_endpoint
from tests.harness.hostile import RecordingUpstream, RecordingUpstreamFactory, resources, settled
from vocelio_contract.config import Endpoint, GatewayConfig

#: Scheduling slack on a shared machine: the bound is request_s, the test allows this much over.
SLACK_S = 0.6


@pytest.fixture
async def stuck(recording_upstream: Any) -> AsyncIterator[tuple[RecordingUpstream, Switch]]:
    """An upstream that reads each request and never answers (until the test ends)."""
    switch = Switch(mode="hang")
    up = await recording_upstream(switch)
    yield up, switch
    switch.released.set()


async def gateway(gateway_factory: GatewayFactory, *endpoints: Endpoint, **timeouts: float) -> Gateway:
    attempts = int(timeouts.pop("attempts", 3))
    return await gateway_factory(GatewayConfig(services=[service(
        "svc", *endpoints, health_check={"enabled": False}, timeouts=timeouts,
        retry={"attempts": attempts, "min_retries_per_s": 100},
        circuit_breaker={"enabled": False}, passive_health={"consecutive_failures": 1000},
        load_balancing={"panic_threshold_percent": 100})]))


async def timed(gw: Gateway, method: str = "GET", **kw: Any) -> tuple[int, float, dict[str, Any]]:
    loop = asyncio.get_running_loop()
    start = loop.time()
    status, _, body = await gw.request(method, "/api/v1/svc/slow", **kw)
    return status, loop.time() - start, json.loads(body) if body.startswith(b"{") else {}


async def test_a_slow_upstream_gets_its_504_at_the_deadline_whatever_the_attempts(
        stuck: tuple[RecordingUpstream, Switch], gateway_factory: GatewayFactory) -> None:
    up, _ = stuck
    gw = await gateway(gateway_factory, up.endpoint(), request_s=2.0, attempts=3)
    before = resources(gw.app)
    status, elapsed, body = await timed(gw)
    assert status == 504
    assert body["status_code"] == 504
    assert 2.0 - 0.05 <= elapsed <= 2.0 + SLACK_S, elapsed
    assert len(up.requests) == 1  # the first attempt had the whole deadline: nothing left to retry
    await settled(gw.app, before)


async def test_per_try_timeouts_retry_within_the_deadline(stuck: tuple[RecordingUpstream, Switch],
                                                          gateway_factory: GatewayFactory) -> None:
    up, _ = stuck
    gw = await gateway(gateway_factory, up.endpoint(), request_s=2.0, per_try_s=0.5, attempts=3)
    status, elapsed, _ = await timed(gw)
    assert status == 504
    assert 1.5 - 0.05 <= elapsed <= 1.5 + SLACK_S, elapsed
    assert len(up.requests) == 3


async def test_the_last_attempt_gets_only_what_is_left_of_the_deadline(stuck: tuple[RecordingUpstream, Switch],
                                                                       gateway_factory: GatewayFactory) -> None:
    up, _ = stuck
    gw = await gateway(gateway_factory, up.endpoint(), request_s=1.3, per_try_s=0.5, attempts=10)
    status, elapsed, _ = await timed(gw)
    assert status == 504
    assert 1.3 - 0.05 <= elapsed <= 1.3 + SLACK_S, elapsed
    assert len(up.requests) == 3  # 0.5 + 0.5 + the 0.3 left


async def test_no_retry_starts_below_the_floor(stuck: tuple[RecordingUpstream, Switch],
                                               gateway_factory: GatewayFactory) -> None:
    up, _ = stuck
    gw = await gateway(gateway_factory, up.endpoint(), request_s=1.0, per_try_s=0.45, retry_floor_s=0.2,
                       attempts=10)
    status, elapsed, _ = await timed(gw)
    assert status == 504
    assert 0.9 - 0.05 <= elapsed <= 0.9 + SLACK_S, elapsed
    assert len(up.requests) == 2  # 0.1 s left after two attempts: under the 0.2 s floor


async def test_connect_time_counts_against_the_deadline(stuck: tuple[RecordingUpstream, Switch],
                                                        gateway_factory: GatewayFactory) -> None:
    up, _ = stuck
    with hanging_endpoint() as blackhole:
        gw = await gateway(gateway_factory, blackhole, up.endpoint(), request_s=1.0, connect_s=0.6, attempts=3)
        for _ in range(2):  # either endpoint first: the client still waits no longer than the deadline
            status, elapsed, _ = await timed(gw)
            assert status == 504
            assert 1.0 - 0.05 <= elapsed <= 1.0 + SLACK_S, elapsed


async def test_a_connect_that_hangs_is_cut_at_the_deadline_not_at_the_connect_timeout(
        gateway_factory: GatewayFactory) -> None:
    with hanging_endpoint() as blackhole:
        gw = await gateway(gateway_factory, blackhole, request_s=0.8, connect_s=5.0, attempts=3)
        before = resources(gw.app)
        status, elapsed, body = await timed(gw)
        assert status == 504
        assert "did not answer in time" in body["message"]
        assert 0.8 - 0.05 <= elapsed <= 0.8 + SLACK_S, elapsed
        await settled(gw.app, before)


async def test_an_upload_gets_its_504_at_the_deadline(stuck: tuple[RecordingUpstream, Switch],
                                                      gateway_factory: GatewayFactory) -> None:
    up, _ = stuck
    gw = await gateway(gateway_factory, up.endpoint(), request_s=1.0, attempts=3)
    status, elapsed, _ = await timed(gw, "POST", data=b"x" * 1000)
    assert status == 504
    assert 1.0 - 0.05 <= elapsed <= 1.0 + SLACK_S, elapsed
    assert len(up.requests) == 1
    assert len(up.requests[0].body) == 1000


async def test_fast_failures_are_still_retried_inside_the_deadline(recording_upstream: RecordingUpstreamFactory,
                                                                   gateway_factory: GatewayFactory) -> None:
    up = await recording_upstream()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        refused = Endpoint(address="127.0.0.1", port=s.getsockname()[1])
    gw = await gateway(gateway_factory, refused, up.endpoint(), request_s=1.0, attempts=2)
    for _ in range(4):
        status, elapsed, _ = await timed(gw)
        assert status == 200
        assert elapsed < 1.0
