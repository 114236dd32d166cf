"""Memory per connection is bounded (#3): a client that pipelines thousands of
requests and never reads its answers, or uploads pipelined bodies, or never
reads a large streamed answer, does not grow the process: the gateway stops
reading once a connection's queued requests and unsent answers exceed its
budget, and every write path (gateway endpoints such as /metrics, proxied
answers, errors) waits for the client. A client that takes nothing for the send
timeout is disconnected. Raw sockets, RSS and descriptor counters."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator

import pytest

from tests.harness.app_fixtures import Gateway, GatewayFactory, RawUpstreamFactory, poll, service
from tests.harness.hostile import raw_request, resources, settled
from tests.harness.wire_tools import Flooder, http_server_of
from vocelio_contract.config import Endpoint, GatewayConfig
from vocelio_proxy.wire.http1.limits import PIPELINED_SLICE
from vocelio_proxy.wire.server import HttpConnection, HttpServer

MiB = 1024 * 1024
BUDGET = 128 * 1024
#: A paused connection stops parsing within one slice: at most this many more requests.
SLICE_OVERSHOOT = PIPELINED_SLICE // len(b"GET / HTTP/1.0\r\n\r\n") + 1


def _connection(server: HttpServer) -> HttpConnection:
    [conn] = list(server.connections)
    assert isinstance(conn, HttpConnection)
    return conn


async def _flood_settles(conn: HttpConnection) -> None:
    """Wait until the gateway took what it will take of a flood: the queue, the
    unparsed backlog and the unsent answers unchanged for 20 polls in a row (kernel
    socket buffers absorb part of any flood before the gateway must pause)."""
    seen: list[tuple[int, int, int]] = []

    def still() -> bool:
        transport = conn._transport
        seen.append((len(conn._queue), len(conn._backlog),
                     transport.get_write_buffer_size() if transport is not None else -1))
        return len(seen) > 20 and len(set(seen[-20:])) == 1

    await poll(still, "the gateway stopped taking the flood", deadline_s=15)


@pytest.fixture
async def gateway(raw_upstream: RawUpstreamFactory, gateway_factory: GatewayFactory) -> tuple[Gateway, int]:
    # A lean upstream (it keeps nothing): the process's RSS then measures the gateway.
    port = await raw_upstream(lambda head: b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    gw = await gateway_factory(GatewayConfig(services=[service(
        "svc", Endpoint(address="127.0.0.1", port=port), health_check={"enabled": False})]),
        limits={"max_connection_buffer_bytes": BUDGET})
    return gw, port


# Enough requests that their answers overflow the kernel's socket buffers (megabytes
# on loopback), so the gateway itself must hold back.
@pytest.mark.parametrize(("path", "count"), [(b"/health", 20000), (b"/metrics", 3000), (b"/api/v1/svc/x", 20000),
                                             (b"/nowhere", 20000)])
async def test_thousands_of_pipelined_requests_never_read_do_not_grow_the_process(gateway: tuple[Gateway, int],
                                                                                  path: bytes, count: int) -> None:
    gw, _ = gateway
    server = http_server_of(gw)
    request = b"GET " + path + b" HTTP/1.1\r\nHost: a\r\n\r\n"
    flood = request * count
    answer_size = len(await raw_request(gw.port, b"GET " + path + b" HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"))
    await poll(lambda: not server.connections, "the sizing connection closed")
    # Warm up allocator pools and lazily built state with a short flood first.
    warm = await Flooder.start(gw.port, request * 50)
    await poll(lambda: len(server.connections) == 1, "warm-up connection accepted")
    await _flood_settles(_connection(server))
    await warm.close()
    await poll(lambda: not server.connections, "warm-up connection closed")
    gc.collect()
    before = resources(gw.app)
    flooder = await Flooder.start(gw.port, flood)
    await poll(lambda: len(server.connections) == 1, "connection accepted")
    conn = _connection(server)
    await _flood_settles(conn)
    gc.collect()
    during = resources(gw.app)
    assert len(conn._queue) <= server.wire_limits.max_pipelined + SLICE_OVERSHOOT
    assert conn._queued_bytes <= BUDGET + SLICE_OVERSHOOT * 1024
    assert conn._reading_paused, "the gateway stopped reading"
    transport = conn._transport
    assert transport is not None
    _, high = transport.get_write_buffer_limits()
    unsent = transport.get_write_buffer_size()
    assert during.rss - before.rss < 4 * MiB, f"RSS grew by {(during.rss - before.rss) / MiB:.1f} MiB"
    await flooder.close()
    await settled(gw.app, before)
    await poll(lambda: not server.connections, "the flooding connection is gone")
    # Unsent answers: up to the transport's high-water mark plus the one answer written
    # before it paused; the next answer waits for the client. A /metrics answer grows as
    # the flood is counted (more digits, new series): one asked for after the flood is at
    # least as large as any written during it.
    answer_size = max(answer_size, len(await raw_request(
        gw.port, b"GET " + path + b" HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")))
    assert unsent <= high + answer_size + 1024


@pytest.fixture
async def silent_upstream() -> AsyncIterator[int]:
    """An upstream that takes requests and never answers (health checks aside)."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            if head.startswith(b"GET /health"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            while await reader.read(65536):
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    yield int(server.sockets[0].getsockname()[1])
    server.close()


async def test_pipelined_uploads_behind_a_slow_request_are_bounded_by_the_connection_budget(
        gateway_factory: GatewayFactory, silent_upstream: int) -> None:
    gw = await gateway_factory(GatewayConfig(services=[service(
        "svc", Endpoint(address="127.0.0.1", port=silent_upstream), health_check={"enabled": False})]),
        limits={"max_connection_buffer_bytes": BUDGET})
    server = http_server_of(gw)
    body = b"x" * 8192
    request = b"POST /api/v1/svc/up HTTP/1.1\r\nHost: a\r\nContent-Length: 8192\r\n\r\n" + body
    flood = request * 400  # 3.2 MiB of uploads
    gc.collect()
    before = resources(gw.app)
    flooder = await Flooder.start(gw.port, flood)
    await poll(lambda: len(server.connections) == 1, "connection accepted")
    conn = _connection(server)
    await _flood_settles(conn)
    queued_bodies = sum(ex.body.size for ex, _ in conn._queue if ex.body is not None)  # type: ignore[attr-defined]
    assert queued_bodies <= BUDGET + len(request) * SLICE_OVERSHOOT
    assert conn._reading_paused
    gc.collect()
    grown = resources(gw.app).rss - before.rss
    assert grown < 4 * MiB, f"RSS grew by {grown / MiB:.1f} MiB"
    await flooder.close()
    await settled(gw.app, before)


@pytest.fixture
async def endless_upstream() -> AsyncIterator[int]:
    """An upstream that streams a 64 MiB answer as fast as it is taken (bounded
    itself: it waits for its socket like a real server)."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            if head.startswith(b"GET /health"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
                return
            total = 64 * MiB
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                         b"Content-Length: %d\r\n\r\n" % total)
            block = b"z" * 65536
            for _ in range(total // len(block)):
                writer.write(block)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    yield int(server.sockets[0].getsockname()[1])
    server.close()


async def test_a_large_answer_the_client_never_reads_does_not_grow_the_process_and_times_out(
        gateway_factory: GatewayFactory, endless_upstream: int) -> None:
    gw = await gateway_factory(GatewayConfig(services=[service(
        "svc", Endpoint(address="127.0.0.1", port=endless_upstream), health_check={"enabled": False},
        timeouts={"idle_s": 30})]), limits={"client_send_timeout_s": 1.0})
    server = http_server_of(gw)
    gc.collect()
    before = resources(gw.app)
    flooder = await Flooder.start(gw.port, b"GET /api/v1/svc/big HTTP/1.1\r\nHost: a\r\n\r\n")
    await poll(lambda: len(server.connections) == 1, "connection accepted")
    conn = _connection(server)
    await poll(lambda: not conn._writable, "the client's socket is full")
    grown = resources(gw.app).rss - before.rss
    assert grown < 4 * MiB, f"RSS grew by {grown / MiB:.1f} MiB"
    # The client takes nothing: after the send timeout the gateway lets go, upstream included.
    await settled(gw.app, before, deadline_s=6)
    await poll(lambda: not server.connections, "the stuck connection is closed", deadline_s=6)
    await flooder.close()


async def test_many_flooding_connections_stay_within_their_budgets(gateway: tuple[Gateway, int]) -> None:
    gw, _ = gateway
    server = http_server_of(gw)
    request = b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n"
    flood = request * 2000
    gc.collect()
    before = resources(gw.app)
    flooders = [await Flooder.start(gw.port, flood) for _ in range(20)]
    await poll(lambda: len(server.connections) == 20, "connections accepted")
    for conn in list(server.connections):
        assert isinstance(conn, HttpConnection)
        await _flood_settles(conn)
        assert len(conn._queue) <= server.wire_limits.max_pipelined + SLICE_OVERSHOOT
    gc.collect()
    grown = resources(gw.app).rss - before.rss
    assert grown < 20 * MiB, f"RSS grew by {grown / MiB:.1f} MiB for 20 connections"
    for flooder in flooders:
        await flooder.close()
    await settled(gw.app, before)
