"""A final answer reaches the client even when the gateway sent it before it read
the request (docs/security/wire.md, "Lingering close"): a close with unread
input makes the kernel send a reset, and the reset destroys the answer at the
client. The gateway shuts its write side after the answer, reads and drops
what the client still sends, and closes once the client closes, goes quiet
(`limits.lingering_timeout_s`) or `limits.lingering_time_s` has passed.

Clients write their whole upload at once and only then read (as curl does with
a body it already wrote); the counters show that lingering connections end."""

from __future__ import annotations

import asyncio
import contextlib
import json

import psutil
import pytest

from tests.harness.app_fixtures import Gateway, GatewayFactory, poll, service
from tests.harness.hostile import (
    RecordingUpstream,
    RecordingUpstreamFactory,
    raw_request,
    resources,
    settled,
    status_of,
)
from tests.harness.upstream_answer_tools import read_answer, upload_then_read
from tests.harness.wire_tools import http_server_of, responses_in
from vocelio_contract.config import GatewayConfig

#: Uploads: BIG is under the body limit (refused for another reason), OVER above it.
LIMIT, BIG, OVER = 1_500_000, 1_000_000, 3_000_000
# A short tick (a quarter of the header timeout) so the lingering timers run at test speed.
FAST = {"client_header_timeout_s": 0.4, "limits": {"max_body_bytes": LIMIT, "lingering_time_s": 1.5,
                                                   "lingering_timeout_s": 0.4}}


@pytest.fixture
async def edge(recording_upstream: RecordingUpstreamFactory,
               gateway_factory: GatewayFactory) -> tuple[Gateway, RecordingUpstream]:
    up = await recording_upstream()
    gw = await gateway_factory(GatewayConfig(services=[service("svc", up.endpoint(), health_check={"enabled": False})]),
                               **FAST)
    return gw, up


def _chunked(size: int, piece: int = 65536) -> bytes:
    block = b"%x\r\n%s\r\n" % (piece, b"c" * piece)
    return block * (size // piece) + b"0\r\n\r\n"


UPLOADS = {
    "a declared length over the limit (413)": (
        b"POST /api/v1/svc/up HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % OVER, b"x" * BIG, 413),
    "a declared length to an unrouted path (404)": (
        b"POST /nowhere HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % BIG, b"x" * BIG, 404),
    "a chunked upload to an unrouted path (404)": (
        b"POST /nowhere HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", _chunked(BIG), 404),
    "a chunked upload over the limit (413 while it arrives)": (
        b"POST /api/v1/svc/up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", _chunked(OVER), 413),
    "100-continue with a length over the limit, body sent anyway": (
        b"POST /api/v1/svc/up HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n" % OVER,
        b"x" * BIG, 413),
    "a refused head (a bad header) followed by its body": (
        b"POST /api/v1/svc/up HTTP/1.1\r\nHost: a\r\nBad Header: x\r\nContent-Length: %d\r\n\r\n" % BIG,
        b"x" * BIG, 400),
    "a broken chunk size in a large upload": (
        b"POST /api/v1/svc/up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"zz\r\n" + b"x" * BIG, 400),
}


@pytest.mark.parametrize("after", [b"", b"GET /garbage HTTP/1.1\r\n\r\n" * 2000 + b"\x00" * 100_000],
                         ids=["alone", "pipelined garbage after"])
@pytest.mark.parametrize(("head", "body", "status"), UPLOADS.values(), ids=UPLOADS.keys())
async def test_an_answer_sent_before_the_upload_was_read_reaches_the_client(
        edge: tuple[Gateway, RecordingUpstream], head: bytes, body: bytes, status: int, after: bytes) -> None:
    gw, up = edge
    before = resources(gw.app)
    got = await upload_then_read(gw.port, head, body, after=after)
    [(got_status, headers, envelope)] = responses_in(got)
    assert got_status == status, got[:300]
    assert headers["connection"] == "close"
    assert json.loads(envelope)["status_code"] == status
    assert up.requests == []
    await settled(gw.app, before)


async def test_a_100_continue_client_that_waits_gets_the_refusal_and_may_still_send(
        edge: tuple[Gateway, RecordingUpstream]) -> None:
    gw, up = edge
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    try:
        writer.write(b"POST /api/v1/svc/up HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
                     b"Content-Length: %d\r\n\r\n" % OVER)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
        assert head.startswith(b"HTTP/1.1 413 ")  # final, no 100 first
        # A client whose wait for 100 timed out sends the body anyway: dropped, no reset.
        writer.write(b"x" * BIG)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        rest = await read_answer(reader)
        assert b'"status_code":413' in (head + rest).replace(b" ", b"")
    finally:
        writer.transport.abort()
    assert up.requests == []


async def test_a_lingering_connection_ends_when_the_client_goes_quiet(edge: tuple[Gateway, RecordingUpstream]) -> None:
    gw, _ = edge
    server = http_server_of(gw)
    before = resources(gw.app)
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    try:
        writer.write(b"POST /nowhere HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % BIG + b"x" * 1000)
        answer = await read_answer(reader)  # ends at the gateway's FIN: the write side is shut
        assert status_of(answer) == 404
        assert server.lingering_closes == 1
        # The client neither sends nor closes: the gateway closes after the lingering timeout.
        await poll(lambda: not server.connections, "the quiet lingering connection closed", deadline_s=3)
    finally:
        writer.transport.abort()
    await settled(gw.app, before)


async def test_the_answer_ends_with_a_fin_while_the_gateway_still_reads_and_the_client_closing_ends_it(
        recording_upstream: RecordingUpstreamFactory, gateway_factory: GatewayFactory) -> None:
    up = await recording_upstream()
    gw = await gateway_factory(GatewayConfig(services=[service("svc", up.endpoint(), health_check={"enabled": False})]),
                               client_header_timeout_s=0.4, limits={"lingering_time_s": 30, "lingering_timeout_s": 30})
    server = http_server_of(gw)
    before = resources(gw.app)
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    loop = asyncio.get_running_loop()
    started = loop.time()
    writer.write(b"POST /nowhere HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % BIG + b"x" * 1000)
    answer = await read_answer(reader, timeout_s=5)
    # The write side was shut right after the answer (the client reads it to its end at
    # once) while the connection is kept open to read what the client still sends.
    assert status_of(answer) == 404
    assert loop.time() - started < 2
    assert len(server.connections) == 1
    writer.write(b"x" * 100_000)
    await writer.drain()
    writer.close()
    await poll(lambda: not server.connections, "the client's close ended the lingering", deadline_s=2)
    await settled(gw.app, before)


@pytest.mark.parametrize("head", [
    # Refused on its head: the gateway was reading when it answered.
    b"POST /nowhere HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % 10**9,
    # Refused once the body passed the limit: reading had stopped (it resumes to drop).
    b"POST /api/v1/svc/up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + _chunked(OVER)[:-5],
], ids=["refused head", "refused body"])
async def test_a_client_that_keeps_sending_is_closed_after_the_lingering_time_without_growing_memory(
        edge: tuple[Gateway, RecordingUpstream], head: bytes) -> None:
    gw, _ = edge
    server = http_server_of(gw)
    rss = psutil.Process().memory_info().rss
    _, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    sent = 0
    block = b"x" * 65536
    try:
        writer.write(head)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with contextlib.suppress(ConnectionError):
            while loop.time() - started < 6:
                writer.write(block)
                await writer.drain()
                sent += len(block)
        ended = loop.time() - started
    finally:
        writer.transport.abort()
    # Closed by the lingering time (1.5 s, checked by the tick), long before the client stopped.
    assert ended < 4, ended
    # The gateway read (and dropped) what the client sent while it lingered: far more than
    # the kernel's socket buffers would have taken from a connection nobody reads.
    assert sent > 16 * 1024 * 1024, sent
    # What was read was dropped, not kept.
    assert psutil.Process().memory_info().rss - rss < 32 * 1024 * 1024
    await poll(lambda: not server.connections, "the lingering connection closed")


async def test_lingering_connections_count_against_the_connection_cap(recording_upstream: RecordingUpstreamFactory,
                                                                      gateway_factory: GatewayFactory) -> None:
    up = await recording_upstream()
    gw = await gateway_factory(GatewayConfig(services=[service("svc", up.endpoint(), health_check={"enabled": False})]),
                               client_header_timeout_s=0.4,
                               limits={"max_client_connections": 2, "lingering_time_s": 2, "lingering_timeout_s": 1})
    server = http_server_of(gw)
    before = resources(gw.app)
    held = []
    try:
        for _ in range(2):
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
            writer.write(b"POST /nowhere HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % BIG + b"x" * 1000)
            assert status_of(await read_answer(reader)) == 404
            held.append(writer)
        assert server.lingering_closes == 2
        assert len(server.connections) == 2
        # Both are still counted: a third connection is over the cap.
        assert status_of(await raw_request(gw.port, b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n")) == 503
        # The lingering ones end on their own (quiet for lingering_timeout_s); the cap frees.
        await poll(lambda: not server.connections, "lingering connections closed", deadline_s=5)
        assert status_of(await raw_request(gw.port, b"GET /health HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")) \
            == 200
    finally:
        for writer in held:
            writer.transport.abort()
    await poll(lambda: not server.connections and not server.lingering, "all connections closed")
    await settled(gw.app, before)


async def test_answers_to_requests_read_whole_close_without_lingering(edge: tuple[Gateway, RecordingUpstream]) -> None:
    gw, up = edge
    server = http_server_of(gw)
    keep = b"POST /api/v1/svc/a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
    close = b"GET /api/v1/svc/b HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    answers = responses_in(await raw_request(gw.port, keep + keep + close))
    assert [status for status, _, _ in answers] == [200, 200, 200]
    refused = responses_in(await raw_request(gw.port, b"GET /nowhere HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"))
    assert [status for status, _, _ in refused] == [404]
    assert server.lingering_closes == 0
    assert len(up.requests) == 3


async def test_lingering_can_be_switched_off(recording_upstream: RecordingUpstreamFactory,
                                             gateway_factory: GatewayFactory) -> None:
    up = await recording_upstream()
    gw = await gateway_factory(GatewayConfig(services=[service("svc", up.endpoint(), health_check={"enabled": False})]),
                               limits={"lingering_time_s": 0})
    server = http_server_of(gw)
    await upload_then_read(gw.port, b"POST /nowhere HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % BIG,
                           b"x" * 1000, settle_s=0.1, read_timeout_s=1)
    assert server.lingering_closes == 0
    await poll(lambda: not server.connections, "closed at once")
