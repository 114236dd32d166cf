"""Breakers cannot wedge (issue #10, item 1), with real sockets: trip a service's
breaker with real failures, let it go half-open, then let the half-open probe
misbehave in every way a client can (disconnect mid-body, never finish the
body, break the chunked framing, leave while the upstream thinks, send a body
the service refuses, leave while an upgrade is pending). With a healthy
upstream the service must answer 200 again within the open time plus the probe
timeout, and the resources (fds, in_flight, endpoint in_flight, probe slots)
must come back."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.harness.app_fixtures import Gateway, GatewayFactory, poll, service
from tests.harness.breakers_tools import (
    Switch,
    breaker_of,
    first_200_after,
    open_raw,
    probe_slots,
    trip_to_half_open,
    ws_request,
)
from tests.harness.hostile import RecordingUpstream, RecordingUpstreamFactory, resources, settled
from vocelio_contract.config import GatewayConfig
from vocelio_proxy.policy.breakers import BreakerState

OPEN_S = 0.3
#: Large: a recovery faster than this proves the slot was released, not timed out.
LONG_PROBE_TIMEOUT_S = 30.0
SHORT_PROBE_TIMEOUT_S = 0.6
SLACK_S = 1.0
#: More body than the proxy reads ahead (64 KiB) before it asks the breaker: the upload
#: becomes the half-open probe while the rest of its body is still due.
PAST_READ_AHEAD_BODY = b"a" * 70_000
PAST_READ_AHEAD_UPLOAD = (b"POST /api/v1/svc/upload HTTP/1.1\r\nHost: t\r\nContent-Length: 140000\r\n\r\n"
                          + PAST_READ_AHEAD_BODY)


async def gateway(gateway_factory: GatewayFactory, up: RecordingUpstream, probe_timeout_s: float,
                  **extra: Any) -> Gateway:
    return await gateway_factory(GatewayConfig(services=[service(
        "svc", up.endpoint(), health_check={"enabled": False}, retry={"attempts": 1},
        passive_health={"consecutive_failures": 1000},
        circuit_breaker={"consecutive_failures": 1, "open_s": OPEN_S, "half_open_max_probes": 1,
                         "probe_timeout_s": probe_timeout_s},
        timeouts={"request_s": 2.0, "connect_s": 0.5}, **extra)]))


async def recovered(gw: Gateway, before: Any, within_s: float) -> float:
    """The service answers 200 again within `within_s`, the breaker closes and nothing leaks."""
    elapsed = await first_200_after(gw, "/api/v1/svc/after", within_s)
    assert breaker_of(gw).state is BreakerState.CLOSED
    await settled(gw.app, before)
    assert probe_slots(gw.app) == 0
    return elapsed


async def test_a_probe_whose_client_disconnects_mid_body_frees_its_slot(recording_upstream: RecordingUpstreamFactory,
                                                                        gateway_factory: GatewayFactory) -> None:
    up = await recording_upstream(Switch())
    gw = await gateway(gateway_factory, up, LONG_PROBE_TIMEOUT_S)
    before = resources(gw.app)
    await trip_to_half_open(gw)
    _, writer = await open_raw(gw.port)
    writer.write(PAST_READ_AHEAD_UPLOAD)
    await writer.drain()
    await poll(lambda: probe_slots(gw.app) == 1, "the upload is the half-open probe")
    writer.transport.abort()  # a reset, as a client that crashed would leave
    assert await recovered(gw, before, SLACK_S) < SLACK_S


async def test_a_probe_whose_client_closes_politely_mid_body_frees_its_slot(
        recording_upstream: RecordingUpstreamFactory, gateway_factory: GatewayFactory) -> None:
    up = await recording_upstream(Switch())
    gw = await gateway(gateway_factory, up, LONG_PROBE_TIMEOUT_S)
    before = resources(gw.app)
    await trip_to_half_open(gw)
    _, writer = await open_raw(gw.port)
    writer.write(b"PUT /api/v1/svc/upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"%x\r\n%s\r\n" % (len(PAST_READ_AHEAD_BODY), PAST_READ_AHEAD_BODY))
    await writer.drain()
    await poll(lambda: probe_slots(gw.app) == 1, "the upload is the half-open probe")
    writer.close()
    assert await recovered(gw, before, SLACK_S) < SLACK_S


async def test_a_probe_whose_body_never_finishes_stops_holding_the_slot_after_the_probe_timeout(
        recording_upstream: RecordingUpstreamFactory, gateway_factory: GatewayFactory) -> None:
    up = await recording_upstream(Switch())
    gw = await gateway(gateway_factory, up, SHORT_PROBE_TIMEOUT_S)
    before = resources(gw.app)
    await trip_to_half_open(gw)
    _, writer = await open_raw(gw.port)
    writer.write(PAST_READ_AHEAD_UPLOAD)
    await writer.drain()
    await poll(lambda: probe_slots(gw.app) == 1, "the stalled upload is the half-open probe")
    # The stalled client stays connected: only the probe timeout can free the slot.
    elapsed = await first_200_after(gw, "/api/v1/svc/after", SHORT_PROBE_TIMEOUT_S + SLACK_S)
    assert elapsed <= SHORT_PROBE_TIMEOUT_S + SLACK_S
    assert breaker_of(gw).state is BreakerState.CLOSED
    writer.close()
    await settled(gw.app, before)
    assert probe_slots(gw.app) == 0


async def test_a_probe_with_broken_chunk_framing_cannot_keep_the_service_down(
        recording_upstream: RecordingUpstreamFactory, gateway_factory: GatewayFactory) -> None:
    up = await recording_upstream(Switch())
    gw = await gateway(gateway_factory, up, SHORT_PROBE_TIMEOUT_S)
    await trip_to_half_open(gw)
    _, writer = await open_raw(gw.port)
    writer.write(b"POST /api/v1/svc/upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"5\r\nhello\r\nZZZ\r\n")
    await writer.drain()
    # Whether the gateway answers 400 at once (a BodyError: released) or the request stalls
    # (only the probe timeout helps), the service is back within the probe timeout.
    elapsed = await first_200_after(gw, "/api/v1/svc/after", SHORT_PROBE_TIMEOUT_S + SLACK_S)
    assert elapsed <= SHORT_PROBE_TIMEOUT_S + SLACK_S
    assert breaker_of(gw).state is BreakerState.CLOSED
    assert probe_slots(gw.app) == 0
    writer.close()


async def test_a_request_with_broken_chunk_framing_releases_everything(recording_upstream: RecordingUpstreamFactory,
                                                                       gateway_factory: GatewayFactory) -> None:
    up = await recording_upstream(Switch())
    gw = await gateway(gateway_factory, up, SHORT_PROBE_TIMEOUT_S)
    before = resources(gw.app)
    reader, writer = await open_raw(gw.port)
    writer.write(b"POST /api/v1/svc/upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"5\r\nhello\r\nZZZ\r\n")
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 2)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    after = await settled(gw.app, before, deadline_s=2)
    assert after.probe_slots == before.probe_slots


async def test_a_probe_whose_client_leaves_while_the_upstream_thinks_frees_its_slot(
        recording_upstream: RecordingUpstreamFactory, gateway_factory: GatewayFactory) -> None:
    switch = Switch(mode="hang")
    up = await recording_upstream(switch)
    gw = await gateway(gateway_factory, up, LONG_PROBE_TIMEOUT_S)
    before = resources(gw.app)
    await trip_to_half_open(gw)
    _, writer = await open_raw(gw.port)
    writer.write(b"GET /api/v1/svc/slow HTTP/1.1\r\nHost: t\r\n\r\n")
    await writer.drain()
    await poll(lambda: switch.hung == 1, "the probe reached the upstream")
    writer.transport.abort()
    await poll(lambda: probe_slots(gw.app) == 0, "the probe released", SLACK_S)
    switch.mode = "ok"
    switch.released.set()
    assert await recovered(gw, before, SLACK_S) < SLACK_S


async def test_a_probe_refused_by_the_gateway_before_sending_frees_its_slot(
        recording_upstream: RecordingUpstreamFactory, gateway_factory: GatewayFactory) -> None:
    up = await recording_upstream(Switch())
    gw = await gateway(gateway_factory, up, LONG_PROBE_TIMEOUT_S, max_body_bytes=100)
    before = resources(gw.app)
    await trip_to_half_open(gw)
    status, _, _ = await gw.request("POST", "/api/v1/svc/big", data=b"x" * 1000)
    assert status == 413
    assert probe_slots(gw.app) == 0
    assert breaker_of(gw).state is BreakerState.HALF_OPEN  # no verdict either way
    assert await recovered(gw, before, SLACK_S) < SLACK_S


async def test_an_upgrade_probe_whose_client_leaves_before_the_101_frees_its_slot(
        recording_upstream: RecordingUpstreamFactory, gateway_factory: GatewayFactory) -> None:
    switch = Switch(mode="hang")
    up = await recording_upstream(switch)
    gw = await gateway(gateway_factory, up, LONG_PROBE_TIMEOUT_S)
    before = resources(gw.app)
    await trip_to_half_open(gw)
    _, writer = await open_raw(gw.port)
    writer.write(ws_request("/api/v1/svc/socket"))
    await writer.drain()
    await poll(lambda: switch.hung == 1, "the upgrade reached the upstream")
    assert probe_slots(gw.app) == 1
    writer.transport.abort()
    await poll(lambda: probe_slots(gw.app) == 0, "the upgrade probe released", SLACK_S)
    switch.mode = "ok"
    switch.released.set()
    assert await recovered(gw, before, SLACK_S) < SLACK_S


@pytest.mark.parametrize("probes", [1, 3])
async def test_many_misbehaving_probes_in_a_row_never_wedge_the_service(recording_upstream: RecordingUpstreamFactory,
                                                                        gateway_factory: GatewayFactory,
                                                                        probes: int) -> None:
    switch = Switch()
    up = await recording_upstream(switch)
    gw = await gateway(gateway_factory, up, SHORT_PROBE_TIMEOUT_S)
    before = resources(gw.app)
    for _ in range(3):
        await trip_to_half_open(gw)
        writers = []
        for _ in range(probes):
            _, writer = await open_raw(gw.port)
            writer.write(PAST_READ_AHEAD_UPLOAD)
            await writer.drain()
            writers.append(writer)
        await poll(lambda: probe_slots(gw.app) == 1, "one probe admitted")
        for writer in writers:
            writer.transport.abort()
        await recovered(gw, before, SHORT_PROBE_TIMEOUT_S + SLACK_S)
    await asyncio.sleep(0)  # one loop turn: the recording upstream files the request it just answered
    assert up.paths().count("/after") >= 3
