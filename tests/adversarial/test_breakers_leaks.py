"""No error path leaks (issue #10, items 1 and 7): every failing upstream of the
corpus and a client leaving at every stage of a request (mid-head, before and
mid-body, while the upstream thinks, mid-response, while an upgrade is pending,
inside a tunnel), each run once with the breaker closed and once as the
half-open probe. Afterwards file descriptors, in_flight, endpoint in_flight and
the breaker's probe slots are back, and a healthy service answers again."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from tests.harness.app_fixtures import Gateway, GatewayFactory, RawUpstreamFactory, poll, service
from tests.harness.breakers_tools import (
    FAILURE_CORPUS,
    BrokenBody,
    CapturingWriter,
    FailureCase,
    Switch,
    breaker_of,
    first_200_after,
    open_raw,
    probe_slots,
    raw_upgrade_upstream,
    switching,
    ws_request,
)
from tests.harness.hostile import RecordingUpstreamFactory, raw_request, resources, settled
from vocelio_contract.config import Endpoint, GatewayConfig
from vocelio_proxy.lifecycle.app import gateway_handler
from vocelio_proxy.policy.breakers import BreakerState
from vocelio_proxy.wire.exchange import BodyError, Exchange

OPEN_S = 0.2


def config(endpoint: Endpoint) -> GatewayConfig:
    return GatewayConfig(services=[service(
        "svc", endpoint, health_check={"enabled": False}, retry={"attempts": 1},
        passive_health={"consecutive_failures": 1000},
        circuit_breaker={"consecutive_failures": 1, "open_s": OPEN_S, "half_open_max_probes": 1,
                         "probe_timeout_s": 60},
        timeouts={"request_s": 0.5, "connect_s": 0.3})])


async def make_half_open(gw: Gateway) -> None:
    """Open the breaker with a real failing request to /trip, then wait out the open time."""
    await raw_request(gw.port, b"GET /api/v1/svc/trip HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                      read_timeout_s=2)
    breaker = breaker_of(gw)
    assert breaker.state is not BreakerState.CLOSED
    await poll(lambda: breaker.state is BreakerState.HALF_OPEN, "half-open")


async def no_leaks(gw: Gateway, before: Any) -> None:
    await settled(gw.app, before)
    assert probe_slots(gw.app) == 0


@pytest.fixture
async def stack() -> AsyncIterator[contextlib.AsyncExitStack]:
    async with contextlib.AsyncExitStack() as s:
        yield s


@pytest.mark.parametrize("case", FAILURE_CORPUS.values(), ids=FAILURE_CORPUS.keys())
async def test_failing_upstreams_leak_nothing_closed_or_half_open(raw_upstream: RawUpstreamFactory,
                                                                  gateway_factory: GatewayFactory,
                                                                  stack: contextlib.AsyncExitStack,
                                                                  case: FailureCase) -> None:
    endpoint, request, _ = await case(raw_upstream, stack)
    gw = await gateway_factory(config(endpoint))
    before = resources(gw.app)
    for _ in range(3):
        await raw_request(gw.port, request, read_timeout_s=3)
    await no_leaks(gw, before)
    await make_half_open(gw)
    await raw_request(gw.port, request, read_timeout_s=3)  # the probe
    await no_leaks(gw, before)
    assert breaker_of(gw).state is not BreakerState.CLOSED  # a failing probe is a verdict


# -- a client leaving at every stage ------------------------------------------------------

Leave = Callable[[Gateway, Switch], Awaitable[None]]


async def _abort_after(gw: Gateway, data: bytes, reached: Callable[[], bool], what: str) -> None:
    _, writer = await open_raw(gw.port)
    writer.write(data)
    await writer.drain()
    await poll(reached, what)
    writer.transport.abort()


async def mid_head(gw: Gateway, switch: Switch) -> None:
    fds = resources(gw.app).fds
    # The client's socket and the gateway's accepted one: both live in this process.
    await _abort_after(gw, b"GET /api/v1/svc/x HTTP/1.1\r\nHost: t\r\nX-Long: abc",
                       lambda: resources(gw.app).fds >= fds + 2, "the gateway accepted the connection")


#: More body than the proxy reads ahead (64 KiB) before contacting the upstream: the
#: upload is forwarded (and holds an admission) while the rest is still due.
PAST_READ_AHEAD = 70_000


async def before_body(gw: Gateway, switch: Switch) -> None:
    # The body is read ahead before any upstream is involved: the request is in the pipeline.
    await _abort_after(gw, b"POST /api/v1/svc/x HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n",
                       lambda: resources(gw.app).in_flight == 1, "request read")


async def mid_body_read_ahead(gw: Gateway, switch: Switch) -> None:
    await _abort_after(gw, b"POST /api/v1/svc/x HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n" + b"a" * 40,
                       lambda: resources(gw.app).in_flight == 1, "body being read")


async def mid_body(gw: Gateway, switch: Switch) -> None:
    await _abort_after(gw, b"POST /api/v1/svc/x HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n"
                       % (2 * PAST_READ_AHEAD) + b"a" * PAST_READ_AHEAD,
                       lambda: resources(gw.app).endpoint_in_flight == 1, "upload forwarded")


async def mid_chunked_body(gw: Gateway, switch: Switch) -> None:
    await _abort_after(gw, b"POST /api/v1/svc/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                       b"%x\r\n%s\r\n" % (PAST_READ_AHEAD, b"a" * PAST_READ_AHEAD),
                       lambda: resources(gw.app).endpoint_in_flight == 1, "upload forwarded")


async def waiting_upstream(gw: Gateway, switch: Switch) -> None:
    switch.mode = "hang"
    hung = switch.hung
    await _abort_after(gw, b"GET /api/v1/svc/x HTTP/1.1\r\nHost: t\r\n\r\n", lambda: switch.hung > hung,
                       "the upstream is thinking")
    await poll(lambda: resources(gw.app).endpoint_in_flight == 0, "released")
    switch.mode = "ok"
    switch.released.set()
    switch.released = asyncio.Event()


async def waiting_for_the_101(gw: Gateway, switch: Switch) -> None:
    switch.mode = "hang"
    hung = switch.hung
    await _abort_after(gw, ws_request("/api/v1/svc/socket"), lambda: switch.hung > hung, "upgrade pending")
    await poll(lambda: resources(gw.app).endpoint_in_flight == 0, "released")
    switch.mode = "ok"
    switch.released.set()
    switch.released = asyncio.Event()


async def pipelined_then_gone(gw: Gateway, switch: Switch) -> None:
    request = b"GET /api/v1/svc/x HTTP/1.1\r\nHost: t\r\n\r\n"
    reader, writer = await open_raw(gw.port)
    writer.write(request * 20)
    await writer.drain()
    await reader.readuntil(b"\r\n\r\n")
    writer.transport.abort()


LEAVES: dict[str, Leave] = {
    "mid-head": mid_head,
    "after the head, before the body": before_body,
    "mid-body, read ahead": mid_body_read_ahead,
    "mid-body": mid_body,
    "mid-chunked-body": mid_chunked_body,
    "while the upstream thinks": waiting_upstream,
    "while an upgrade is pending": waiting_for_the_101,
    "with pipelined requests queued": pipelined_then_gone,
}


@pytest.mark.parametrize("leave", LEAVES.values(), ids=LEAVES.keys())
async def test_a_client_leaving_at_any_stage_leaks_nothing_closed_or_half_open(
        recording_upstream: RecordingUpstreamFactory, gateway_factory: GatewayFactory, leave: Leave) -> None:
    switch = Switch()
    up = await recording_upstream(switch)
    gw = await gateway_factory(config(up.endpoint()))
    before = resources(gw.app)
    await leave(gw, switch)
    await no_leaks(gw, before)
    await make_half_open(gw)
    await leave(gw, switch)
    await no_leaks(gw, before)
    await first_200_after(gw, "/api/v1/svc/after", 2.0)
    assert breaker_of(gw).state is BreakerState.CLOSED
    switch.released.set()


async def test_a_client_leaving_mid_response_leaks_nothing(raw_upstream: RawUpstreamFactory,
                                                           gateway_factory: GatewayFactory) -> None:
    # The upstream sends a head and part of a chunked body, then stalls.
    port = await raw_upstream(lambda head: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
    gw = await gateway_factory(config(Endpoint(address="127.0.0.1", port=port)))
    before = resources(gw.app)
    for _ in range(3):
        reader, writer = await open_raw(gw.port)
        writer.write(b"GET /api/v1/svc/stream HTTP/1.1\r\nHost: t\r\n\r\n")
        await writer.drain()
        assert (await reader.readuntil(b"hello")).startswith(b"HTTP/1.1 200 ")
        writer.transport.abort()
    await no_leaks(gw, before)


async def test_a_client_leaving_inside_a_tunnel_leaks_nothing(gateway_factory: GatewayFactory) -> None:
    async with raw_upgrade_upstream(lambda head: switching(head)) as up:
        gw = await gateway_factory(config(up.endpoint()))
        before = resources(gw.app)
        for _ in range(3):
            reader, writer = await open_raw(gw.port)
            writer.write(ws_request("/api/v1/svc/socket"))
            await writer.drain()
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"data")
            assert await reader.readexactly(4) == b"data"
            writer.transport.abort()
        await no_leaks(gw, before)
        await poll(lambda: up.closed == 3, "every upstream side closed")


@pytest.mark.parametrize(("chunks", "status"), [([], 400), ([b"abc"], 400), ([b"a" * 70_000, b"b"], 408)])
async def test_a_body_that_breaks_releases_the_probe_without_a_verdict(recording_upstream: RecordingUpstreamFactory,
                                                                       gateway_factory: GatewayFactory,
                                                                       chunks: list[bytes], status: int) -> None:
    """The server raises `BodyError` from the body for malformed framing or a stalled client
    (the client's fault): the pipeline answers it, and the probe slot, the endpoint's
    in-flight count and the upstream connection are released without blaming the upstream."""
    switch = Switch()
    up = await recording_upstream(switch)
    gw = await gateway_factory(config(up.endpoint()))
    handler = gateway_handler(gw.app)
    before = resources(gw.app)
    await make_half_open(gw)
    body = BrokenBody(chunks, BodyError(status, "The request body is malformed"))
    ex = Exchange("POST", "/api/v1/svc/upload", "1.1", [("Host", "t"), ("Transfer-Encoding", "chunked")],
                  {"host": "t", "transfer-encoding": "chunked"}, "127.0.0.1", True, body, None, False)
    out = CapturingWriter()
    await handler(ex, out)  # type: ignore[arg-type]
    assert out.status == status
    assert out.closed
    assert breaker_of(gw).state is BreakerState.HALF_OPEN  # no verdict about the upstream
    await no_leaks(gw, before)
    await first_200_after(gw, "/api/v1/svc/after", 2.0)
    assert breaker_of(gw).state is BreakerState.CLOSED
