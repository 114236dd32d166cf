"""Error bodies never name internal addresses (issue #10, item 10): a corpus of
failing upstreams (refused, reset, malformed, oversized, timed out, hanging
connects, truncated, unexpected or invalid 101s) is answered with envelopes
that say what happened and never where: no upstream address or port, no
exception class or text. The detail goes to the log, with the request id the
client was given, so an operator can still find it."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from tests.harness.app_fixtures import service
from tests.harness.breakers_tools import (
    LEAK_MARKERS,
    hanging_endpoint,
    raw_upgrade_upstream,
    switching,
    ws_request,
)
from tests.harness.hostile import raw_request, resources, settled, status_of
from vocelio_proxy.config import Endpoint, GatewayConfig

GET = b"GET /api/v1/svc/x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
POST = b"POST /api/v1/svc/x HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 3\r\n\r\nabc"

Case = Callable[[Any, contextlib.AsyncExitStack], Awaitable[tuple[Endpoint, bytes, int | None]]]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def refused(raw_upstream: Any, stack: contextlib.AsyncExitStack) -> tuple[Endpoint, bytes, int | None]:
    return Endpoint(address="127.0.0.1", port=closed_port()), POST, 502


def answering(data: bytes | None, request: bytes = GET, status: int | None = 502) -> Case:
    async def case(raw_upstream: Any, stack: contextlib.AsyncExitStack) -> tuple[Endpoint, bytes, int | None]:
        port = await raw_upstream(lambda head: data)
        return Endpoint(address="127.0.0.1", port=port), request, status
    return case


async def hanging_connect(raw_upstream: Any, stack: contextlib.AsyncExitStack) -> tuple[Endpoint, bytes, int | None]:
    return stack.enter_context(_sync(hanging_endpoint())), GET, 504


@contextlib.contextmanager
def _sync(cm: Any) -> Iterator[Any]:
    with cm as value:
        yield value


def upgrade_answer(make: Callable[[bytes], bytes], status: int) -> Case:
    async def case(raw_upstream: Any, stack: contextlib.AsyncExitStack) -> tuple[Endpoint, bytes, int | None]:
        up = await stack.enter_async_context(raw_upgrade_upstream(make))
        return up.endpoint(), ws_request("/api/v1/svc/socket"), status
    return case


async def upgrade_refused(raw_upstream: Any, stack: contextlib.AsyncExitStack) -> tuple[Endpoint, bytes, int | None]:
    return Endpoint(address="127.0.0.1", port=closed_port()), ws_request("/api/v1/svc/socket"), 502


CORPUS: dict[str, Case] = {
    "connect refused": refused,
    "closed before answering": answering(None),
    "malformed status line": answering(b"NOT HTTP AT ALL\r\n\r\n"),
    "bad header syntax": answering(b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n"),
    "oversized headers": answering(b"HTTP/1.1 200 OK\r\n" + b"X-Big: " + b"a" * 70_000 + b"\r\n\r\n"),
    "bad content length": answering(b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n"),
    "partial head then close": answering(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Le"),
    "101 to a plain request": answering(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                                        b"Connection: Upgrade\r\n\r\n"),
    "timeout": answering(b"", status=504),
    "hanging connect": hanging_connect,
    "truncated body": answering(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 100\r\n\r\nonly ten b",
                                status=None),
    "upgrade connect refused": upgrade_refused,
    "upgrade answered with a wrong accept": upgrade_answer(lambda head: switching(head, accept="bm9wZQ=="), 502),
    "upgrade answered with h2c": upgrade_answer(lambda head: switching(head, upgrade="h2c", accept=None), 502),
    "upgrade answered with garbage": upgrade_answer(lambda head: b"SSH-2.0-OpenSSH\r\n\r\n", 502),
}


@pytest.fixture
async def stack() -> AsyncIterator[contextlib.AsyncExitStack]:
    async with contextlib.AsyncExitStack() as s:
        yield s


@pytest.mark.parametrize("case", CORPUS.values(), ids=CORPUS.keys())
async def test_failing_upstreams_never_show_their_address_and_are_logged_with_the_request_id(
        raw_upstream, gateway_factory, stack, caplog, case: Case) -> None:
    endpoint, request, expected = await case(raw_upstream, stack)
    gw = await gateway_factory(GatewayConfig(services=[service(
        "svc", endpoint, health_check={"enabled": False}, retry={"attempts": 1},
        timeouts={"request_s": 0.5, "connect_s": 0.3})]))
    before = resources(gw.app)
    with caplog.at_level(logging.WARNING, logger="vocelio.proxy"):
        answer = await raw_request(gw.port, request, read_timeout_s=3)
    head, _, body = answer.partition(b"\r\n\r\n")
    request_id = next(line.split(b":", 1)[1].strip().decode() for line in head.split(b"\r\n")
                      if line.lower().startswith(b"x-request-id:"))
    if expected is not None:
        assert status_of(answer) == expected, answer
        envelope = json.loads(body)
        assert envelope["request_id"] == request_id and envelope["status_code"] == expected
    shown = answer.decode("latin-1").replace(request_id, "")
    for marker in (*LEAK_MARKERS, str(endpoint.port)):
        assert marker not in shown, (marker, shown)
    logged = [r for r in caplog.records if getattr(r, "fields", {}).get("request_id") == request_id]
    assert logged, [r.getMessage() for r in caplog.records]
    assert any(endpoint.key == r.fields.get("endpoint") for r in logged)  # type: ignore[attr-defined]
    await settled(gw.app, before)


async def test_a_service_without_endpoints_says_so_without_internals(gateway_factory) -> None:
    gw = await gateway_factory(GatewayConfig(services=[service("svc")]))
    answer = await raw_request(gw.port, GET, read_timeout_s=2)
    assert status_of(answer) == 503
    for marker in LEAK_MARKERS:
        assert marker not in answer.decode("latin-1")
