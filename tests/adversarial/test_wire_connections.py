"""A connection cap with a predictable answer (#14): beyond
`max_client_connections`, a new connection gets a 503 envelope with
`Connection: close` and then an orderly close (never a reset, never a hang),
is counted, and the cap frees as soon as connections close. Raw sockets,
descriptor counters."""

from __future__ import annotations

import asyncio
import json
import logging
import socket

import pytest

from tests.harness.app_fixtures import Gateway, GatewayFactory, poll, service
from tests.harness.hostile import RecordingUpstreamFactory, resources, settled
from tests.harness.wire_tools import close_quietly, http_server_of, read_until_closed, responses_in
from vocelio_contract.config import GatewayConfig
from vocelio_proxy.lifecycle import appkeys as keys

CAP = 5
GET = b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n"


@pytest.fixture
async def capped(recording_upstream: RecordingUpstreamFactory, gateway_factory: GatewayFactory) -> Gateway:
    up = await recording_upstream()
    return await gateway_factory(GatewayConfig(services=[service("svc", up.endpoint(),
                                                                 health_check={"enabled": False})]),
                                 limits={"max_client_connections": CAP})


async def _open_served(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A keep-alive connection that got one answer (so it is surely counted)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(GET)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200")
    lengths = [line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")]
    length = int(lengths[0])
    await reader.readexactly(length)
    return reader, writer


async def _refused_answer(port: int, send: bytes = b"") -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        if send:
            writer.write(send)
        return await read_until_closed(reader, 5)
    finally:
        await close_quietly(writer)


@pytest.mark.parametrize("send", [b"", GET, GET * 3], ids=["silent", "one-request", "pipelined"])
async def test_a_connection_over_the_cap_gets_a_503_envelope_and_an_orderly_close(capped: Gateway, send: bytes) -> None:
    server = http_server_of(capped)
    before = resources(capped.app)
    held = [await _open_served(capped.port) for _ in range(CAP)]
    answer = await _refused_answer(capped.port, send)
    [(status, headers, body)] = responses_in(answer)
    assert status == 503
    assert headers["connection"] == "close"
    assert headers["retry-after"] == "1"
    envelope = json.loads(body)
    assert envelope["status_code"] == 503
    assert "connection limit" in envelope["message"]
    assert server.refused_connections == 1
    assert capped.app[keys.METRICS].requests_by_class()[("gateway", "OTHER", "5xx")] == 1
    assert len(server.connections) == CAP
    for _, writer in held:
        await close_quietly(writer)
    await poll(lambda: not server.connections and not server.lingering, "all connections closed")
    await settled(capped.app, before)


async def test_a_connection_over_the_cap_that_closed_before_it_was_accepted_is_dropped_quietly(
        capped: Gateway, caplog: pytest.LogCaptureFixture) -> None:
    """The refusal's 503 reaches a socket the client closed before the gateway accepted it:
    the client's reset comes back before the half-close, which fails (ENOTCONN). The
    connection is dropped without an error and without staying in the lingering set."""
    server = http_server_of(capped)
    before = resources(capped.app)
    held = [await _open_served(capped.port) for _ in range(CAP)]
    early = socket.create_connection(("127.0.0.1", capped.port))
    early.close()  # no event-loop turn since the connect: the gateway accepts a closed connection
    await poll(lambda: server.refused_connections == 1, "the refusal")
    assert (await _refused_answer(capped.port)).startswith(b"HTTP/1.1 503")  # the cap still answers
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    for _, writer in held:
        await close_quietly(writer)
    await poll(lambda: not server.connections and not server.lingering, "all connections closed")
    await settled(capped.app, before)


async def test_the_cap_frees_as_connections_close(capped: Gateway) -> None:
    server = http_server_of(capped)
    held = [await _open_served(capped.port) for _ in range(CAP)]
    assert (await _refused_answer(capped.port)).startswith(b"HTTP/1.1 503")
    await close_quietly(held.pop()[1])
    await poll(lambda: len(server.connections) == CAP - 1, "a slot freed")
    held.append(await _open_served(capped.port))
    for _, writer in held:
        await close_quietly(writer)


async def test_a_burst_of_connections_is_split_into_served_and_refused_never_reset(capped: Gateway) -> None:
    server = http_server_of(capped)
    before = resources(capped.app)
    opened = await asyncio.gather(*(asyncio.open_connection("127.0.0.1", capped.port) for _ in range(40)))
    for _, writer in opened:
        writer.write(GET)
    answers = await asyncio.gather(*(asyncio.wait_for(reader.read(4096), 5) for reader, _ in opened))
    statuses = sorted(int(a.split(b" ", 2)[1]) for a in answers)
    assert statuses.count(200) == CAP, statuses
    assert statuses.count(503) == 40 - CAP, statuses
    assert server.refused_connections == 40 - CAP
    for _, writer in opened:
        await close_quietly(writer)
    await poll(lambda: not server.connections and not server.lingering, "all connections closed")
    await settled(capped.app, before)
