"""Attacks on the upstream side of the wire (helper attack2): answers that a
pooled connection or a tunnel set-up could read differently from the
upstream that wrote them. Raw upstreams that write exact bytes, raw clients.

Each test asserts the promise of docs/security/wire.md ("Upstream answers"):
bytes after a complete answer never become another answer, and an upstream
answer head over 64 KiB or 256 fields is a 502 envelope."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable

import pytest

from tests.harness.app_fixtures import GatewayFactory, service
from tests.harness.breakers_tools import raw_upgrade_upstream, switching, ws_request
from tests.harness.hostile import raw_request, status_of
from tests.harness.wire_tools import responses_in
from vocelio_contract.config import Endpoint, GatewayConfig

STALE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 22\r\n\r\nANSWER-MEANT-FOR-FIRST"


def _config(port: int) -> GatewayConfig:
    return GatewayConfig(services=[service(
        "svc", Endpoint(address="127.0.0.1", port=port), health_check={"enabled": False},
        retry={"attempts": 1}, passive_health={"consecutive_failures": 1000})])


@contextlib.asynccontextmanager
async def _late_body_upstream(no_body_head: bytes) -> AsyncIterator[int]:
    """An upstream that answers `/first` with a no-body status whose head declares
    a body, and writes that body a moment later (as a sloppy framework does); the
    body's bytes look like a response. Every other request gets `200 ok`."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if b" /first " in head:
                    writer.write(no_body_head)
                    await writer.drain()
                    # The late body: sent once the next request is on this connection
                    # (or after a second, if the gateway did not reuse it).
                    with contextlib.suppress(TimeoutError):
                        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 1.0)
                        writer.write(STALE)
                        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                        await writer.drain()
                        continue
                    writer.write(STALE)
                    await writer.drain()
                    continue
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()


NO_BODY_HEADS_DECLARING_A_BODY = {
    # RFC 9110 §8.6 / RFC 9112 §6.1: a server MUST NOT send Content-Length or
    # Transfer-Encoding in a 204; a head that does announces bytes that will follow.
    "204 with Content-Length": b"HTTP/1.1 204 No Content\r\nContent-Length: %d\r\n\r\n" % len(STALE),
    "204 with Transfer-Encoding": b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n",
}


@pytest.mark.parametrize("head", NO_BODY_HEADS_DECLARING_A_BODY.values(), ids=NO_BODY_HEADS_DECLARING_A_BODY.keys())
async def test_a_late_body_after_a_204_never_becomes_the_next_clients_answer(gateway_factory: GatewayFactory,
                                                                             head: bytes) -> None:
    async with _late_body_upstream(head) as port:
        gw = await gateway_factory(_config(port))
        first = await raw_request(gw.port, b"GET /api/v1/svc/first HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        assert status_of(first) in (204, 502), first
        # Another client, right after: it must get the upstream's answer to its own request.
        second = await raw_request(gw.port, b"GET /api/v1/svc/second HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        assert b"ANSWER-MEANT-FOR-FIRST" not in second, second
        [(status, _, body)] = responses_in(second)
        assert (status, body) == (200, b"ok"), second


def _padded(status_line: bytes, fields: int) -> bytes:
    return status_line + b"".join(b"X-Pad-%d: v\r\n" % i for i in range(fields))


OVERSIZED_UPGRADE_ANSWERS = {
    "a refusal with 300 fields": lambda head: _padded(b"HTTP/1.1 403 Forbidden\r\n", 300)
    + b"Content-Length: 2\r\n\r\nno",
    "a refusal with a 100 KiB field": lambda head: b"HTTP/1.1 403 Forbidden\r\nX-Big: " + b"v" * 100_000
    + b"\r\nContent-Length: 2\r\n\r\nno",
    "a valid 101 with 300 fields": lambda head: switching(head).replace(
        b"\r\n\r\n", b"\r\n" + b"".join(b"X-Pad-%d: v\r\n" % i for i in range(300)) + b"\r\n", 1),
}


@pytest.mark.parametrize("answer", OVERSIZED_UPGRADE_ANSWERS.values(), ids=OVERSIZED_UPGRADE_ANSWERS.keys())
async def test_an_answer_to_an_upgrade_over_the_upstream_head_limits_is_a_502(gateway_factory: GatewayFactory,
                                                                              answer: Callable[[bytes], bytes]) -> None:
    async with raw_upgrade_upstream(answer, echo=False) as up:
        gw = await gateway_factory(_config(up.port))
        got = await raw_request(gw.port, ws_request("/api/v1/svc/socket"), read_timeout_s=3)
        assert status_of(got) == 502, got[:200]
        assert b"X-Pad" not in got
        assert b"X-Big" not in got
        assert json.loads(got.split(b"\r\n\r\n", 1)[1])["status_code"] == 502


@pytest.mark.parametrize("size", [70_000, 300_000])
async def test_a_refused_upgrade_is_never_relayed_with_a_shorter_body_that_looks_complete(
        gateway_factory: GatewayFactory, size: int) -> None:
    body = b"r" * size
    answer = b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % size + body
    async with raw_upgrade_upstream(lambda head: answer, echo=False) as up:
        gw = await gateway_factory(_config(up.port))
        got = await raw_request(gw.port, ws_request("/api/v1/svc/socket"), read_timeout_s=3)
        status = status_of(got)
        if status == 502:
            return  # refusing an answer the gateway will not relay whole is correct
        assert status == 403, got[:200]
        head, _, rest = got.partition(b"\r\n\r\n")
        lengths = [int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")]
        # A complete-looking answer must carry the upstream's whole body.
        assert lengths == [size], (lengths, len(rest))
        assert rest == body, (lengths, len(rest))
