"""Upgrades are policy (issue #10, item 6), with raw sockets on both sides:
only protocols the service allows are offered upstream; h2c and HTTP2-Settings
never reach an upstream; a 101 is honoured only as the answer to the upgrade
that was offered (one matching token, Connection: upgrade, a valid
Sec-WebSocket-Accept), otherwise the client gets a 502 envelope and the
upstream connection is closed; tunnels pass through the breaker, count as in
flight, have metrics and close when idle."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from tests.harness.app_fixtures import Gateway, GatewayFactory, poll, service
from tests.harness.breakers_tools import (
    WS_KEY,
    RawUpgradeUpstream,
    breaker_of,
    open_raw,
    raw_upgrade_upstream,
    read_until_closed,
    switching,
    ws_accept,
    ws_request,
)
from tests.harness.hostile import RecordingUpstreamFactory, raw_request, resources, settled, status_of
from vocelio_contract.config import GatewayConfig
from vocelio_proxy.lifecycle import appkeys as keys
from vocelio_proxy.policy.breakers import BreakerState

PLAIN_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


async def gateway(gateway_factory: GatewayFactory, up: Any, **kw: Any) -> Gateway:
    kw.setdefault("circuit_breaker", {"consecutive_failures": 1000})
    return await gateway_factory(GatewayConfig(services=[service(
        "svc", up.endpoint(), health_check={"enabled": False}, retry={"attempts": 1},
        passive_health={"consecutive_failures": 1000}, **kw)]))


def metric(gw: Gateway, name: str, **labels: str) -> float:
    registry: CollectorRegistry = gw.app[keys.METRICS].registry
    return registry.get_sample_value(name, labels) or 0.0


def envelope(answer: bytes) -> dict[str, Any]:
    body = answer.split(b"\r\n\r\n", 1)[1]
    data: dict[str, Any] = json.loads(body)
    return data


# -- 101 answers that are not an answer to the offer ---------------------------------

BAD_SWITCHES = {
    "wrong accept": lambda head: switching(head, accept="dGhpcyBpcyBub3QgaXQ="),
    "missing accept": lambda head: switching(head, accept=None),
    "h2c instead": lambda head: switching(head, upgrade="h2c", accept=None),
    "another protocol": lambda head: switching(head, upgrade="foo"),
    "two protocols": lambda head: switching(head, upgrade="websocket, foo"),
    "a versioned token not offered": lambda head: switching(head, upgrade="websocket/99"),
    "no upgrade header": lambda head: switching(head, upgrade=""),
    "no connection upgrade": lambda head: switching(head, connection=""),
    "accept for another key": lambda head: (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                                            b"Connection: Upgrade\r\nSec-WebSocket-Accept: "
                                            + ws_accept("AAAAAAAAAAAAAAAAAAAAAA==").encode() + b"\r\n\r\n"),
}


@pytest.mark.parametrize("answer", BAD_SWITCHES.values(), ids=BAD_SWITCHES.keys())
async def test_a_101_that_does_not_answer_the_offer_is_a_502_and_never_a_tunnel(
        gateway_factory: GatewayFactory, answer: Callable[[bytes], bytes]) -> None:
    async with raw_upgrade_upstream(answer) as up:
        gw = await gateway(gateway_factory, up)
        before = resources(gw.app)
        reader, writer = await open_raw(gw.port)
        writer.write(ws_request("/api/v1/svc/socket"))
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 502 "), head
        writer.write(b"\x81\x05hello")  # a frame the upstream must never see
        rest, closed = await read_until_closed(reader, 3)
        assert closed
        data = json.loads(rest)
        assert data["status_code"] == 502
        assert "invalid response" in data["message"]
        await poll(lambda: up.closed == 1, "the gateway closed the upstream connection")
        assert up.received == []
        assert metric(gw, "vocelio_upgrades_refused_total", service="svc") == 1
        assert metric(gw, "vocelio_tunnels_total", service="svc") == 0
        writer.close()
        await settled(gw.app, before)


PLAIN_SWITCHES = {
    "websocket 101": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    "bare 101": b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
    "h2c 101": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
}


@pytest.mark.parametrize("answer", PLAIN_SWITCHES.values(), ids=PLAIN_SWITCHES.keys())
async def test_a_101_to_a_request_that_asked_for_no_upgrade_is_a_502(gateway_factory: GatewayFactory,
                                                                     answer: bytes) -> None:
    async with raw_upgrade_upstream(lambda head: answer) as up:
        gw = await gateway(gateway_factory, up)
        before = resources(gw.app)
        reader, writer = await open_raw(gw.port)
        writer.write(b"GET /api/v1/svc/plain HTTP/1.1\r\nHost: t\r\n\r\n")
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 502 "), head
        # The client's next bytes are a new request, never tunnel data for the upstream.
        await poll(lambda: up.closed == 1, "the gateway closed the upstream connection")
        assert up.received == []
        writer.close()
        await settled(gw.app, before)


# -- what the client asks for --------------------------------------------------------

H2C_ATTEMPTS = {
    "h2c upgrade": b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQC\r\n",
    "upper-case H2C": b"Connection: upgrade, http2-settings\r\nUpgrade: H2C\r\nHTTP2-Settings: AAMAAABk\r\n",
    "h2c without Connection": b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABk\r\n",
    "HTTP2-Settings alone": b"HTTP2-Settings: AAMAAABk\r\n",
    "settings not listed in Connection": b"Connection: Upgrade\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABk\r\n",
    "h2c with a version": b"Connection: Upgrade\r\nUpgrade: h2c/1\r\n",
    "not an allowed protocol": b"Connection: Upgrade\r\nUpgrade: foo\r\n",
    "garbage token": b"Connection: Upgrade\r\nUpgrade: web socket\r\n",
}


@pytest.mark.parametrize("headers", H2C_ATTEMPTS.values(), ids=H2C_ATTEMPTS.keys())
async def test_upgrades_that_are_not_allowed_are_served_as_plain_requests(recording_upstream: RecordingUpstreamFactory,
                                                                          gateway_factory: GatewayFactory,
                                                                          headers: bytes) -> None:
    up = await recording_upstream()
    gw = await gateway(gateway_factory, up)
    before = resources(gw.app)
    answer = await raw_request(gw.port, b"GET /api/v1/svc/x HTTP/1.1\r\nHost: t\r\n" + headers + b"\r\n",
                               read_timeout_s=2)
    assert status_of(answer) == 200, answer
    assert up.paths() == ["/x"]
    assert up.protocol_errors == []
    raw = b"".join(up.raw).lower()
    assert b"http2-settings" not in raw
    assert b"h2c" not in raw
    assert b"upgrade" not in raw
    await settled(gw.app, before)


async def test_a_service_without_upgrades_serves_websocket_requests_as_plain_requests(
        recording_upstream: RecordingUpstreamFactory, gateway_factory: GatewayFactory) -> None:
    up = await recording_upstream()
    gw = await gateway(gateway_factory, up, upgrades=[])
    answer = await raw_request(gw.port, ws_request("/api/v1/svc/socket"), read_timeout_s=2)
    assert status_of(answer) == 200
    assert b"upgrade" not in b"".join(up.raw).lower()


async def test_only_the_allowed_protocols_of_an_offer_are_forwarded(gateway_factory: GatewayFactory) -> None:
    async with raw_upgrade_upstream(lambda head: switching(head)) as up:
        gw = await gateway(gateway_factory, up)
        reader, writer = await open_raw(gw.port)
        writer.write(ws_request("/api/v1/svc/socket", upgrade="h2c, WebSocket, foo",
                                extra=b"HTTP2-Settings: AAMAAABk\r\n"))
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 ")
        assert up.header(0, "upgrade") == ["WebSocket"]
        assert up.header(0, "http2-settings") == []
        assert b"h2c" not in up.heads[0].lower()
        writer.close()


async def test_an_upgrade_request_with_a_body_is_refused(recording_upstream: RecordingUpstreamFactory,
                                                         gateway_factory: GatewayFactory) -> None:
    up = await recording_upstream()
    gw = await gateway(gateway_factory, up)
    for upgrade in ("websocket", "h2c"):
        request = (b"POST /api/v1/svc/x HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: " + upgrade.encode()
                   + b"\r\nSec-WebSocket-Key: " + WS_KEY.encode() + b"\r\nContent-Length: 5\r\n\r\nhello")
        answer = await raw_request(gw.port, request, read_timeout_s=2)
        assert status_of(answer) == 400
    assert up.requests == []
    assert up.connections == 0


@pytest.mark.parametrize("key", [None, "", "c2hvcnQ=", "!!!!", "dGhlIHNhbXBsZSBub25jZQ==AAAA"])
async def test_a_websocket_upgrade_without_a_valid_key_is_refused(recording_upstream: RecordingUpstreamFactory,
                                                                  gateway_factory: GatewayFactory,
                                                                  key: str | None) -> None:
    up = await recording_upstream()
    gw = await gateway(gateway_factory, up)
    answer = await raw_request(gw.port, ws_request("/api/v1/svc/socket", key=key), read_timeout_s=2)
    assert status_of(answer) == 400
    assert up.connections == 0


# -- tunnels: relay, in-flight, metrics, idle timeout, breaker ---------------------------


async def handshake(gw: Gateway) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await open_raw(gw.port)
    writer.write(ws_request("/api/v1/svc/socket"))
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 "), head
    assert f"Sec-WebSocket-Accept: {ws_accept(WS_KEY)}".encode() in head
    return reader, writer


def endpoint_in_flight(gw: Gateway) -> int:
    return resources(gw.app).endpoint_in_flight


async def test_a_valid_tunnel_relays_counts_in_flight_and_settles(gateway_factory: GatewayFactory) -> None:
    async with raw_upgrade_upstream(lambda head: switching(head)) as up:
        gw = await gateway(gateway_factory, up)
        before = resources(gw.app)
        reader, writer = await handshake(gw)
        writer.write(b"ping")
        assert await reader.readexactly(4) == b"ping"
        assert endpoint_in_flight(gw) == 1
        assert gw.app[keys.METRICS].in_flight_count == 1
        assert metric(gw, "vocelio_tunnels_open", service="svc") == 1
        assert metric(gw, "vocelio_tunnels_total", service="svc") == 1
        writer.close()
        await settled(gw.app, before)
        await poll(lambda: up.closed == 1, "upstream side closed")
        assert metric(gw, "vocelio_tunnels_open", service="svc") == 0


async def test_an_idle_tunnel_is_closed_on_both_sides(gateway_factory: GatewayFactory) -> None:
    async with raw_upgrade_upstream(lambda head: switching(head)) as up:
        gw = await gateway(gateway_factory, up, timeouts={"tunnel_idle_s": 0.3})
        before = resources(gw.app)
        reader, writer = await handshake(gw)
        loop = asyncio.get_running_loop()
        started = loop.time()
        _, closed = await read_until_closed(reader, 3)
        idle_for = loop.time() - started
        assert closed, idle_for
        assert 0.25 <= idle_for <= 1.5, idle_for
        await poll(lambda: up.closed == 1, "upstream side closed")
        assert metric(gw, "vocelio_tunnel_idle_closes_total", service="svc") == 1
        writer.close()
        await settled(gw.app, before)


async def test_client_bytes_alone_keep_a_tunnel_open(gateway_factory: GatewayFactory) -> None:
    async with raw_upgrade_upstream(lambda head: switching(head), echo=False) as up:
        gw = await gateway(gateway_factory, up, timeouts={"tunnel_idle_s": 0.5})
        reader, writer = await handshake(gw)
        for i in range(10):
            writer.write(b"%d" % i)
            await writer.drain()
            await asyncio.sleep(0.1)  # the traffic pattern under test, not a wait for a condition
        await poll(lambda: b"".join(up.received) == b"0123456789", "every byte relayed")
        assert up.closed == 0
        assert not reader.at_eof()
        writer.close()


async def test_upstream_bytes_alone_keep_a_tunnel_open(gateway_factory: GatewayFactory) -> None:
    async with raw_upgrade_upstream(lambda head: switching(head), echo=False) as up:
        gw = await gateway(gateway_factory, up, timeouts={"tunnel_idle_s": 0.5})
        reader, writer = await handshake(gw)
        for _ in range(10):
            up.writers[0].write(b"t")
            await asyncio.sleep(0.1)  # the traffic pattern under test
        assert await reader.readexactly(10) == b"t" * 10
        assert up.closed == 0
        writer.close()


async def test_tunnels_pass_through_the_breaker(gateway_factory: GatewayFactory) -> None:
    answers = iter([b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n"])

    def answer(head: bytes) -> bytes:
        return next(answers, switching(head))

    async with raw_upgrade_upstream(answer) as up:
        gw = await gateway(gateway_factory, up, circuit_breaker={"consecutive_failures": 1, "open_s": 30})
        answer_1 = await raw_request(gw.port, ws_request("/api/v1/svc/socket"), read_timeout_s=2)
        assert status_of(answer_1) == 503
        assert breaker_of(gw).state is BreakerState.OPEN
        answer_2 = await raw_request(gw.port, ws_request("/api/v1/svc/socket"), read_timeout_s=2)
        assert status_of(answer_2) == 503
        assert b"circuit breaker open" in answer_2
        assert up.connections == 1  # the open breaker kept the upgrade away from the upstream


async def test_an_invalid_101_counts_as_an_upstream_failure(gateway_factory: GatewayFactory) -> None:
    async with raw_upgrade_upstream(lambda head: switching(head, accept="bm9wZQ==")) as up:
        gw = await gateway(gateway_factory, up, circuit_breaker={"consecutive_failures": 2, "open_s": 30})
        for _ in range(2):
            assert status_of(await raw_request(gw.port, ws_request("/api/v1/svc/s"), read_timeout_s=2)) == 502
        assert breaker_of(gw).state is BreakerState.OPEN


async def test_a_healthy_tunnel_during_half_open_is_a_successful_probe_and_frees_its_slot(
        gateway_factory: GatewayFactory) -> None:
    answers = iter([b"HTTP/1.1 500 Boom\r\nContent-Length: 0\r\n\r\n"])

    def answer(head: bytes) -> bytes:
        return next(answers, switching(head))

    async with raw_upgrade_upstream(answer) as up:
        gw = await gateway(gateway_factory, up, circuit_breaker={
            "consecutive_failures": 1, "open_s": 0.2, "half_open_max_probes": 1})
        assert status_of(await raw_request(gw.port, ws_request("/api/v1/svc/s"), read_timeout_s=2)) == 500
        breaker = breaker_of(gw)
        await poll(lambda: breaker.state is BreakerState.HALF_OPEN, "half-open")
        reader, writer = await handshake(gw)
        # The switch was the verdict: the breaker closed while the tunnel stays open.
        assert breaker.state is BreakerState.CLOSED
        assert breaker.probes_in_flight == 0
        writer.write(b"x")
        assert await reader.readexactly(1) == b"x"
        writer.close()
        assert isinstance(up, RawUpgradeUpstream)
