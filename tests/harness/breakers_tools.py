"""Tools for the breaker, upgrade and deadline tests (tests/adversarial/test_breakers_*,
test_upgrades_*, tests/faults/test_deadlines_*): a responder for the recording
upstream whose behaviour the test switches (ok, fail, hang), a raw upstream for
upgrade answers with exact bytes, an endpoint whose TCP connect hangs, and
helpers to drive a gateway's breaker into half-open through real traffic and
to read the breaker's probe slots.

Plain helpers; the fixtures they build on are `recording_upstream` and
`gateway_factory` (tests/harness/hostile.py, tests/harness/app_fixtures.py)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.harness.app_fixtures import Gateway, poll
from tests.harness.hostile import Received
from vocelio_contract.config import Endpoint
from vocelio_proxy.lifecycle import appkeys as keys
from vocelio_proxy.policy.breakers import Breaker, BreakerState

WS_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#: What an envelope must never show of an upstream failure.
LEAK_MARKERS = ("127.0.0.1", "Error", "Errno", "Exception", "Traceback", "errno", "refused", "connect to",
                "upstream", "Invalid", "Sec-WebSocket", "101", "timed out", "within the")


def ws_accept(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest()).decode()


def ws_request(path: str, *, upgrade: str = "websocket", key: str | None = WS_KEY, extra: bytes = b"",
               connection: str = "Upgrade") -> bytes:
    key_line = f"Sec-WebSocket-Key: {key}\r\n".encode() if key is not None else b""
    return (f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: {connection}\r\nUpgrade: {upgrade}\r\n"
            f"Sec-WebSocket-Version: 13\r\n").encode() + key_line + extra + b"\r\n"


@dataclass
class Switch:
    """A responder for `recording_upstream` whose behaviour a test switches:
    `mode` is ok (200), fail (500) or hang (never answers until `release`)."""

    mode: str = "ok"
    released: asyncio.Event = field(default_factory=asyncio.Event)
    hung: int = 0

    async def __call__(self, req: Received) -> tuple[int, list[tuple[str, str]], bytes]:
        if req.target.endswith("/trip"):
            return 500, [("Content-Type", "text/plain")], b"boom"
        if self.mode == "fail":
            return 500, [("Content-Type", "text/plain")], b"boom"
        if self.mode == "hang":
            self.hung += 1
            await self.released.wait()
        return 200, [("Content-Type", "text/plain")], b"ok"


def breaker_of(gw: Gateway, name: str = "svc") -> Breaker:
    rt = gw.state.runtime
    assert rt is not None
    return rt.services[f"default/{name}"].breaker


def probe_slots(app: web.Application) -> int:
    """Half-open probe slots held across all services."""
    rt = app[keys.STATE].runtime
    return sum(svc.breaker.probes_in_flight for svc in rt.services.values()) if rt is not None else 0


async def trip_to_half_open(gw: Gateway, name: str = "svc", failures: int = 1, deadline_s: float = 5.0) -> None:
    """Open the breaker with real failing requests (the upstream answers 500 on /trip),
    then wait until the open time has passed."""
    for _ in range(failures):
        status, _, _ = await gw.get(f"/api/v1/{name}/trip")
        assert status == 500
    breaker = breaker_of(gw, name)
    assert breaker.state is not BreakerState.CLOSED
    await poll(lambda: breaker.state is BreakerState.HALF_OPEN, "breaker half-open", deadline_s)


async def first_200_after(gw: Gateway, path: str, deadline_s: float) -> float:
    """Send GETs until one is answered 200; returns how long that took."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    statuses: list[int] = []
    while loop.time() - start < deadline_s:
        status, _, _ = await gw.get(path)
        statuses.append(status)
        if status == 200:
            return loop.time() - start
        await asyncio.sleep(0.02)
    raise AssertionError(f"no 200 within {deadline_s} s: {statuses[-10:]}")


@dataclass
class RawUpgradeUpstream:
    """An upstream that answers each request head with exact bytes (`answer(head)`),
    records every head and every byte it received, and after answering a 101
    either echoes (`echo`) or keeps quiet. `closed` counts connections the gateway closed."""

    answer: Callable[[bytes], bytes]
    echo: bool = True
    port: int = 0
    heads: list[bytes] = field(default_factory=list)
    received: list[bytes] = field(default_factory=list)
    closed: int = 0
    connections: int = 0
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.heads.append(head)
            data = self.answer(head)
            writer.write(data)
            await writer.drain()
            if not data.startswith(b"HTTP/1.1 101"):
                await reader.read()
                return
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    return
                self.received.append(chunk)
                if self.echo:
                    writer.write(chunk)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.closed += 1
            writer.close()

    def header(self, index: int, name: str) -> list[str]:
        out = []
        for line in self.heads[index].split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == name.lower().encode():
                out.append(value.strip().decode("latin-1"))
        return out

    def endpoint(self) -> Endpoint:
        return Endpoint(address="127.0.0.1", port=self.port)


@contextlib.asynccontextmanager
async def raw_upgrade_upstream(answer: Callable[[bytes], bytes], echo: bool = True
                               ) -> AsyncIterator[RawUpgradeUpstream]:
    up = RawUpgradeUpstream(answer, echo)
    server = await asyncio.start_server(up.serve, "127.0.0.1", 0)
    up.port = int(server.sockets[0].getsockname()[1])
    try:
        yield up
    finally:
        server.close()
        for writer in up.writers:
            writer.close()


def key_of(head: bytes) -> str | None:
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"sec-websocket-key:"):
            return line.split(b":", 1)[1].strip().decode()
    return None


def switching(head: bytes, *, upgrade: str = "websocket", accept: str | None = "valid",
              connection: str = "Upgrade") -> bytes:
    """A 101 answer; `accept` "valid" computes the right Sec-WebSocket-Accept, None omits it."""
    lines = ["HTTP/1.1 101 Switching Protocols"]
    if upgrade:
        lines.append(f"Upgrade: {upgrade}")
    if connection:
        lines.append(f"Connection: {connection}")
    if accept == "valid":
        key = key_of(head)
        lines.append(f"Sec-WebSocket-Accept: {ws_accept(key) if key else 'none'}")
    elif accept is not None:
        lines.append(f"Sec-WebSocket-Accept: {accept}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@contextlib.contextmanager
def hanging_endpoint() -> Iterator[Endpoint]:
    """A loopback endpoint whose TCP connects hang: a listener with a full accept
    queue (Linux drops SYNs it cannot queue), so connect time can be measured."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):
            s = socket.socket()
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                s.connect(("127.0.0.1", port))
            fillers.append(s)
        yield Endpoint(address="127.0.0.1", port=port)
    finally:
        for s in fillers:
            s.close()
        listener.close()


async def open_raw(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def read_until_closed(reader: asyncio.StreamReader, timeout_s: float) -> tuple[bytes, bool]:
    """Read what arrives for up to `timeout_s`; returns the bytes and whether the peer closed."""
    out = bytearray()
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while True:
        left = end - loop.time()
        if left <= 0:
            return bytes(out), False
        try:
            chunk = await asyncio.wait_for(reader.read(65536), left)
        except TimeoutError:
            return bytes(out), False
        except ConnectionError:
            return bytes(out), True
        if not chunk:
            return bytes(out), True
        out.extend(chunk)


# -- a corpus of failing upstreams ----------------------------------------------------

GET = b"GET /api/v1/svc/x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
POST = b"POST /api/v1/svc/x HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 3\r\n\r\nabc"

FailureCase = Callable[[Any, contextlib.AsyncExitStack], Awaitable[tuple[Endpoint, bytes, int | None]]]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def refused(raw_upstream: Any, stack: contextlib.AsyncExitStack) -> tuple[Endpoint, bytes, int | None]:
    return Endpoint(address="127.0.0.1", port=closed_port()), POST, 502


def answering(data: bytes | None, request: bytes = GET, status: int | None = 502) -> FailureCase:
    async def case(raw_upstream: Any, stack: contextlib.AsyncExitStack) -> tuple[Endpoint, bytes, int | None]:
        port = await raw_upstream(lambda head: data)
        return Endpoint(address="127.0.0.1", port=port), request, status
    return case


async def hanging_connect(raw_upstream: Any, stack: contextlib.AsyncExitStack) -> tuple[Endpoint, bytes, int | None]:
    return stack.enter_context(hanging_endpoint()), GET, 504


def upgrade_answer(make: Callable[[bytes], bytes], status: int) -> FailureCase:
    async def case(raw_upstream: Any, stack: contextlib.AsyncExitStack) -> tuple[Endpoint, bytes, int | None]:
        up = await stack.enter_async_context(raw_upgrade_upstream(make))
        return up.endpoint(), ws_request("/api/v1/svc/socket"), status
    return case


async def upgrade_refused(raw_upstream: Any, stack: contextlib.AsyncExitStack) -> tuple[Endpoint, bytes, int | None]:
    return Endpoint(address="127.0.0.1", port=closed_port()), ws_request("/api/v1/svc/socket"), 502


#: Upstreams failing in every way the proxy must turn into an envelope (or a cut stream):
#: each builds (endpoint, request bytes, the status the client must get or None for a cut stream).
FAILURE_CORPUS: dict[str, FailureCase] = {
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


# -- driving the pipeline without a client socket ------------------------------------------


class BrokenBody:
    """A request body that delivers `chunks`, then breaks the way a malformed or stalled
    client body does in the server (`exchange.BodyError`)."""

    def __init__(self, chunks: list[bytes], error: Exception) -> None:
        self._chunks = chunks
        self._error = error

    @property
    def complete(self) -> bool:
        return False

    async def chunks(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            yield chunk
            await asyncio.sleep(0)
        raise self._error


@dataclass
class CapturingWriter:
    """Stands in for `server.HttpConnection` as the response writer: records what the
    pipeline answered and whether it closed the connection."""

    status: int = 0
    body: bytes = b""
    closed: bool = False
    aborted: bool = False
    date: str = "Thu, 01 Jan 2026 00:00:00 GMT"

    def send(self, ex: Any, status: int, headers: list[tuple[str, str]], body: bytes,
             length: int | None = None) -> None:
        ex.status = self.status = status
        self.body = body

    def start(self, ex: Any, status: int, headers: list[tuple[str, str]], length: int | None) -> None:
        ex.status = self.status = status

    def write(self, data: bytes) -> None:
        self.body += data

    def write_raw(self, data: bytes) -> None:
        pass

    def finish(self) -> None:
        pass

    def finish_with_trailers(self, trailers: list[tuple[str, str]]) -> None:
        pass

    async def drain(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True
