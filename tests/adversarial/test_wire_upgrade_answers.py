"""The answer to an upgrade request is read by the rules of every upstream answer
(docs/security/wire.md, "Upstream answers"): the same head limits and framing
refusals as a pooled request (one rule, `http1.answers` and
`http1.framing.upstream_body_framing`, for both), and a refusal of the upgrade
is relayed with its whole body or not at all (502), never shortened."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from tests.harness.app_fixtures import GatewayFactory
from tests.harness.breakers_tools import switching, ws_request
from tests.harness.hostile import raw_request, resources, settled, status_of
from tests.harness.upstream_answer_tools import one_shot_upstream, plain_config
from tests.harness.wire_tools import responses_in
from vocelio_proxy.wire.http1.limits import UPGRADE_REFUSAL_MAX_BODY, UPSTREAM_MAX_HEADER_BYTES, UPSTREAM_MAX_HEADERS

GET = b"GET /api/v1/svc/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
UPGRADE = ws_request("/api/v1/svc/socket")


def _fields(count: int) -> bytes:
    return b"".join(b"X-Pad-%d: v\r\n" % i for i in range(count))


# Each head is refused as the answer to a plain request and as the answer to an upgrade.
BAD_HEADS = {
    "Content-Length with Transfer-Encoding": b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n"
                                             b"Transfer-Encoding: chunked\r\n\r\nno",
    "two Content-Lengths": b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nno",
    "a Content-Length list": b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2, 2\r\n\r\nno",
    "a signed Content-Length": b"HTTP/1.1 403 Forbidden\r\nContent-Length: +2\r\n\r\nno",
    "status 600": b"HTTP/1.1 600 Odd\r\nContent-Length: 2\r\n\r\nno",
    "status 99": b"HTTP/1.1 099 Odd\r\nContent-Length: 2\r\n\r\nno",
    "obsolete line folding": b"HTTP/1.1 403 Forbidden\r\nX-A: b\r\n c\r\nContent-Length: 2\r\n\r\nno",
    "a bare LF": b"HTTP/1.1 403 Forbidden\nContent-Length: 2\n\nno",
    "a NUL in a value": b"HTTP/1.1 403 Forbidden\r\nX-A: b\x00c\r\nContent-Length: 2\r\n\r\nno",
    "one field over the count": b"HTTP/1.1 403 Forbidden\r\n" + _fields(UPSTREAM_MAX_HEADERS)
                                + b"Content-Length: 2\r\n\r\nno",
    "fields over the size": b"HTTP/1.1 403 Forbidden\r\nX-Big: " + b"v" * UPSTREAM_MAX_HEADER_BYTES
                            + b"\r\nContent-Length: 2\r\n\r\nno",
    "an interim answer with a body": b"HTTP/1.1 100 Continue\r\nContent-Length: 5\r\n\r\nEVIL!"
                                     b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno",
}


@pytest.mark.parametrize("request_bytes", [GET, UPGRADE], ids=["plain request", "upgrade request"])
@pytest.mark.parametrize("answer", BAD_HEADS.values(), ids=BAD_HEADS.keys())
async def test_an_answer_head_is_refused_alike_on_the_pooled_and_the_upgrade_path(
        gateway_factory: GatewayFactory, answer: bytes, request_bytes: bytes) -> None:
    async with one_shot_upstream(lambda head: answer) as up:
        gw = await gateway_factory(plain_config(up.port))
        before = resources(gw.app)
        got = await raw_request(gw.port, request_bytes)
        assert status_of(got) == 502, got[:300]
        envelope = json.loads(got.split(b"\r\n\r\n", 1)[1])
        assert envelope["status_code"] == 502
        assert b"X-Pad" not in got
        assert b"X-Big" not in got
        assert b"EVIL" not in got
        await settled(gw.app, before)


GOOD_HEADS = {
    "fields at the count": _fields(UPSTREAM_MAX_HEADERS - 2),
    "a value trimmed of trailing spaces": b"X-Trim: v \t \r\n",
}


@pytest.mark.parametrize("fields", GOOD_HEADS.values(), ids=GOOD_HEADS.keys())
async def test_a_refusal_within_the_limits_is_relayed_like_any_answer(gateway_factory: GatewayFactory,
                                                                      fields: bytes) -> None:
    answer = b"HTTP/1.1 403 Forbidden\r\n" + fields + b"Content-Length: 2\r\n\r\nno"
    async with one_shot_upstream(lambda head: answer) as up:
        gw = await gateway_factory(plain_config(up.port))
        [(status, headers, body)] = responses_in(await raw_request(gw.port, UPGRADE))
        assert (status, body) == (403, b"no")
        assert headers.get("x-trim", "v") == "v"


@pytest.mark.parametrize("request_bytes", [GET, UPGRADE], ids=["plain request", "upgrade request"])
@pytest.mark.parametrize("endless", [b"v" * 65536, b"X-Pad: v\r\n" * 6000], ids=["one value", "many fields"])
async def test_an_answer_head_that_never_ends_is_a_502_long_before_the_timeout(
        gateway_factory: GatewayFactory, endless: bytes, request_bytes: bytes) -> None:
    # The upstream writes head bytes forever: refused on the bytes read, not at the
    # answer deadline (30 s by default), so memory never holds more than the bound.
    status = b"101 Switching Protocols" if request_bytes is UPGRADE else b"200 OK"
    start = b"HTTP/1.1 " + status + (b"\r\nX-Big: " if endless.startswith(b"v") else b"\r\n")
    async with one_shot_upstream(lambda head: start, endless=endless) as up:
        gw = await gateway_factory(plain_config(up.port))
        started = time.monotonic()
        got = await raw_request(gw.port, request_bytes, read_timeout_s=10)
        assert status_of(got) == 502, got[:200]
        assert time.monotonic() - started < 5


async def test_an_interim_answer_before_the_101_is_skipped_and_the_tunnel_works(
        gateway_factory: GatewayFactory) -> None:
    async with one_shot_upstream(lambda head: b"HTTP/1.1 100 Continue\r\nX-Interim: 1\r\n\r\n" + switching(head)) as up:
        gw = await gateway_factory(plain_config(up.port))
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        try:
            writer.write(UPGRADE)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
            assert head.startswith(b"HTTP/1.1 101 ")
            assert b"X-Interim" not in head
        finally:
            writer.close()


async def test_a_101_that_announces_a_body_is_a_502(gateway_factory: GatewayFactory) -> None:
    async with one_shot_upstream(lambda head: switching(head).replace(
            b"\r\n\r\n", b"\r\nTransfer-Encoding: chunked\r\n\r\n", 1)) as up:
        gw = await gateway_factory(plain_config(up.port))
        assert status_of(await raw_request(gw.port, UPGRADE)) == 502


# -- the body of a refusal: whole, or a 502 -----------------------------------------------

LIMIT = UPGRADE_REFUSAL_MAX_BODY


def _chunked(body: bytes, size: int = 4096) -> bytes:
    pieces = [body[i:i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\nX-Trailer: t\r\n\r\n"


REFUSALS = {
    "a length at the limit": (b"Content-Length: %d\r\n" % LIMIT, b"r" * LIMIT, False, 403),
    "a length one over": (b"Content-Length: %d\r\n" % (LIMIT + 1), b"r" * (LIMIT + 1), False, 502),
    "chunked within the limit": (b"Transfer-Encoding: chunked\r\n", b"c" * (LIMIT - 10), False, 403),
    "chunked over the limit": (b"Transfer-Encoding: chunked\r\n", b"c" * (LIMIT + 10), False, 502),
    "until close within the limit": (b"", b"u" * 5000, True, 403),
    "until close over the limit": (b"", b"u" * (LIMIT + 1), True, 502),
    "empty": (b"Content-Length: 0\r\n", b"", False, 403),
}


@pytest.mark.parametrize(("framing", "body", "close", "expected"), REFUSALS.values(), ids=REFUSALS.keys())
async def test_a_refusal_of_an_upgrade_is_relayed_whole_or_refused(gateway_factory: GatewayFactory, framing: bytes,
                                                                   body: bytes, close: bool, expected: int) -> None:
    wire_body = _chunked(body) if framing.startswith(b"Transfer") else body
    answer = b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\n" + framing + b"\r\n" + wire_body
    async with one_shot_upstream(lambda head: answer, close=close) as up:
        gw = await gateway_factory(plain_config(up.port))
        before = resources(gw.app)
        got = await raw_request(gw.port, UPGRADE)
        [(status, headers, relayed)] = responses_in(got)
        assert status == expected, got[:200]
        if expected == 403:
            assert relayed == body
            assert headers["content-length"] == str(len(body))
            assert "x-trailer" not in headers  # trailers never become headers
        await settled(gw.app, before)


TRUNCATED = {
    "a length cut short": b"Content-Length: 1000\r\n\r\n" + b"r" * 400,
    "chunks cut short": b"Transfer-Encoding: chunked\r\n\r\n100\r\n" + b"c" * 50,
    "chunked without the last chunk": b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
}


@pytest.mark.parametrize("rest", TRUNCATED.values(), ids=TRUNCATED.keys())
async def test_a_refusal_cut_short_is_a_502_never_a_shorter_answer(gateway_factory: GatewayFactory,
                                                                   rest: bytes) -> None:
    answer = b"HTTP/1.1 403 Forbidden\r\n" + rest
    async with one_shot_upstream(lambda head: answer, close=True) as up:
        gw = await gateway_factory(plain_config(up.port))
        got = await raw_request(gw.port, UPGRADE)
        assert status_of(got) == 502, got[:200]
