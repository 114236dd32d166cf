"""Every request ends (#4): a request body that is incomplete, malformed,
stalled or cut ends with a 400/408/413 envelope and a close within the client
body timeout, whatever the handler was doing (reading the body, waiting on the
upstream, or queued behind another request), and releases what it held:
in-flight counts, endpoint in-flight counts, upstream connections, descriptors.
Raw sockets, the recording upstream, resource counters."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import pytest

from tests.harness.app_fixtures import Gateway, GatewayFactory, poll, service
from tests.harness.hostile import RecordingUpstream, RecordingUpstreamFactory, resources, settled
from tests.harness.wire_tools import close_quietly, read_until_closed, responses_in
from vocelio_contract.config import Endpoint, GatewayConfig
from vocelio_proxy.lifecycle import appkeys as keys

TIMEOUT = 0.6
PATH = b"/api/v1/svc/upload"


def _head(*fields: bytes) -> bytes:
    return b"POST " + PATH + b" HTTP/1.1\r\nHost: a\r\n" + b"".join(f + b"\r\n" for f in fields) + b"\r\n"


CL = _head(b"Content-Length: 10")
TE = _head(b"Transfer-Encoding: chunked")

STALLED = [
    ("partial-content-length", CL, b"abc"),
    ("no-body-at-all", CL, b""),
    ("mid-chunk", TE, b"a\r\nabc"),
    ("between-chunks", TE, b"3\r\nabc\r\n"),
    ("in-a-chunk-size", TE, b"3\r\nabc\r\n1"),
    ("after-the-last-chunk", TE, b"3\r\nabc\r\n0\r\n"),
    ("in-a-trailer", TE, b"0\r\nX-T: v"),
    ("expect-100-continue-and-no-body", _head(b"Content-Length: 4", b"Expect: 100-continue"), b""),
]

MALFORMED = [
    ("chunk-size-not-hex", TE, b"zz\r\nabc\r\n0\r\n\r\n", 400),
    ("chunk-size-overflow", TE, b"fffffffffffffffffff\r\nabc\r\n", 400),
    ("chunk-size-negative", TE, b"-3\r\nabc\r\n", 400),
    ("chunk-size-with-space", TE, b"3 \r\nabc\r\n0\r\n\r\n", 400),
    ("chunk-extension-unterminated-quote", TE, b'3;a="b\r\nabc\r\n0\r\n\r\n', 400),
    ("chunk-data-longer-than-its-size", TE, b"3\r\nabcdef\r\n0\r\n\r\n", 400),
    ("chunk-bare-lf", TE, b"3\nabc\n0\n\n", 400),
    ("transfer-encoding-in-trailers", TE, b"3\r\nabc\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    ("content-length-in-trailers", TE, b"3\r\nabc\r\n0\r\nContent-Length: 3\r\n\r\n", 400),
    ("obs-fold-in-trailers", TE, b"3\r\nabc\r\n0\r\nX: a\r\n b\r\n\r\n", 400),
    ("chunked-over-the-body-limit", TE, b"400\r\n" + b"x" * 1024 + b"\r\n" + b"400\r\n" + b"x" * 1024 + b"\r\n", 413),
]


@pytest.fixture
async def edge(recording_upstream: RecordingUpstreamFactory,
               gateway_factory: GatewayFactory) -> tuple[Gateway, RecordingUpstream]:
    up = await recording_upstream()
    gw = await gateway_factory(GatewayConfig(services=[service("svc", up.endpoint(), health_check={"enabled": False})]),
                               limits={"client_body_timeout_s": TIMEOUT, "max_body_bytes": 1500})
    return gw, up


async def _exchange(port: int, pieces: list[bytes], pause_s: float = 0.1,
                    deadline_s: float = 6.0) -> tuple[bytes, float]:
    """Send `pieces` (pausing between them), then read until the gateway closes;
    returns the answer and the seconds from the last byte sent to the close."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for i, piece in enumerate(pieces):
            if i:
                await asyncio.sleep(pause_s)
            writer.write(piece)
            await writer.drain()
        sent = time.monotonic()
        answer = await read_until_closed(reader, deadline_s)
        return answer, time.monotonic() - sent
    finally:
        await close_quietly(writer)


def _counted(gw: Gateway) -> dict[str, float]:
    """Requests recorded by status class, over all services (the gateway's own included)."""
    out: dict[str, float] = {}
    for (_, _, code_class), count in gw.app[keys.METRICS].requests_by_class().items():
        out[code_class] = out.get(code_class, 0) + count
    return out


def _check_envelope(answer: bytes, status: int) -> None:
    answers = responses_in(answer)
    final = [a for a in answers if a[0] >= 200]
    assert [a[0] for a in final] == [status], answer
    _, headers, body = final[0]
    assert headers["connection"] == "close"
    envelope = json.loads(body)
    assert envelope["status_code"] == status
    assert envelope["request_id"]


@pytest.mark.parametrize(("name", "head", "partial"), STALLED, ids=[s[0] for s in STALLED])
@pytest.mark.parametrize("split", [False, True], ids=["one-write", "head-then-body"])
async def test_a_stalled_body_ends_with_408_and_a_close_within_the_body_timeout(edge: tuple[Gateway, RecordingUpstream],
                                                                                name: str, head: bytes, partial: bytes,
                                                                                split: bool) -> None:
    gw, up = edge
    before = resources(gw.app)
    counted = _counted(gw)
    pieces = [head, partial] if split and partial else [head + partial]
    answer, elapsed = await _exchange(gw.port, pieces)
    _check_envelope(answer, 408)
    await poll(lambda: _counted(gw).get("4xx", 0) == counted.get("4xx", 0) + 1, "the request is recorded once")
    assert sum(_counted(gw).values()) == sum(counted.values()) + 1
    assert elapsed < TIMEOUT + 1.5, f"closed {elapsed:.2f}s after the last byte"
    assert up.requests == []  # no complete request reached the upstream
    await settled(gw.app, before)


@pytest.mark.parametrize(("name", "head", "body", "status"), MALFORMED, ids=[m[0] for m in MALFORMED])
@pytest.mark.parametrize("split", [False, True], ids=["one-write", "head-then-body"])
async def test_a_malformed_body_ends_with_its_status_and_a_close(edge: tuple[Gateway, RecordingUpstream], name: str,
                                                                 head: bytes, body: bytes, status: int,
                                                                 split: bool) -> None:
    gw, up = edge
    before = resources(gw.app)
    counted = _counted(gw)
    answer, elapsed = await _exchange(gw.port, [head, body] if split else [head + body])
    _check_envelope(answer, status)
    await poll(lambda: sum(_counted(gw).values()) >= sum(counted.values()) + 1, "the request is recorded")
    assert sum(_counted(gw).values()) == sum(counted.values()) + 1
    assert elapsed < 1.5
    assert up.requests == []
    await settled(gw.app, before)


async def test_a_body_cut_by_a_half_close_is_400(edge: tuple[Gateway, RecordingUpstream]) -> None:
    gw, up = edge
    before = resources(gw.app)
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(CL + b"abc")
    await writer.drain()
    writer.write_eof()
    answer = await read_until_closed(reader, 3)
    await close_quietly(writer)
    _check_envelope(answer, 400)
    assert up.requests == []
    await settled(gw.app, before)


async def test_a_stalled_body_queued_behind_another_request_is_answered_after_it(
        edge: tuple[Gateway, RecordingUpstream]) -> None:
    gw, up = edge
    before = resources(gw.app)
    first = b"GET /api/v1/svc/first HTTP/1.1\r\nHost: a\r\n\r\n"
    answer, elapsed = await _exchange(gw.port, [first + CL + b"abc"])
    assert [a[0] for a in responses_in(answer)] == [200, 408], answer
    assert up.paths() == ["/first"]
    assert elapsed < TIMEOUT + 1.5
    await settled(gw.app, before)


async def test_the_body_timeout_measures_silence_not_total_time(edge: tuple[Gateway, RecordingUpstream]) -> None:
    gw, up = edge
    # Ten bytes, one every 0.3 s (half the timeout): slow, but never silent for long.
    pieces = [CL] + [b"x"] * 10
    answer, _ = await _exchange(gw.port, pieces, pause_s=TIMEOUT / 2)
    assert responses_in(answer)[0][0] == 200
    assert up.requests[0].body == b"x" * 10


@pytest.fixture
async def silent_upstream() -> AsyncIterator[tuple[int, asyncio.Event]]:
    """An upstream that reads request heads and never answers; it records when
    the gateway hangs up on it. Health checks are answered."""
    closed = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            if head.startswith(b"GET /health"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            while await reader.read(65536):
                pass
            closed.set()
        except (ConnectionError, asyncio.IncompleteReadError):
            closed.set()
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    yield int(server.sockets[0].getsockname()[1]), closed
    server.close()


# Past the proxy's 64 KiB read-ahead, so the request is already streaming to the upstream when the body stalls.
_STREAMED = 80 * 1024
STALLED_UPSTREAM = [
    ("content-length", _head(b"Content-Length: %d" % (_STREAMED * 2)), b"a" * _STREAMED),
    ("chunked", TE, b"%x\r\n" % (_STREAMED * 2) + b"a" * _STREAMED),
]


@pytest.mark.parametrize(("name", "head", "partial"), STALLED_UPSTREAM, ids=[s[0] for s in STALLED_UPSTREAM])
async def test_a_stalled_body_on_a_request_waiting_upstream_releases_the_upstream_connection(
        gateway_factory: GatewayFactory, silent_upstream: tuple[int, asyncio.Event], name: str, head: bytes,
        partial: bytes) -> None:
    port, upstream_closed = silent_upstream
    gw = await gateway_factory(GatewayConfig(services=[service(
        "svc", Endpoint(address="127.0.0.1", port=port), health_check={"enabled": False},
        timeouts={"request_s": 30})]), limits={"client_body_timeout_s": TIMEOUT})
    before = resources(gw.app)
    answer, elapsed = await _exchange(gw.port, [head + partial])
    _check_envelope(answer, 408)
    assert elapsed < TIMEOUT + 1.5
    await asyncio.wait_for(upstream_closed.wait(), 3)  # the gateway hung up on the upstream
    await settled(gw.app, before)
