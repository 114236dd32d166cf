"""Tools for the wire tests (tests/unit/test_http1_*, tests/adversarial/test_wire_*):
a recording sink for the sans-I/O request reader, the same request stream
read by h11 (the strict reference) into the same shape, and raw-socket
helpers for clients that misbehave on purpose (pipelining without reading,
stalling mid-body, holding connections open)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import struct
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import h11
from h11._state import MIGHT_SWITCH_PROTOCOL  # h11 exports it, but not in __all__

from tests.harness.app_fixtures import Gateway
from vocelio_proxy.wire.exchange import Exchange
from vocelio_proxy.wire.http1.framing import WireError
from vocelio_proxy.wire.http1.limits import WireLimits
from vocelio_proxy.wire.http1.reader import RequestReader
from vocelio_proxy.wire.server import HttpServer


@dataclass
class Parsed:
    """One request as a reader understood it."""

    method: str
    target: str
    host: str | None
    headers: list[tuple[str, str]]
    content_length: int | None
    chunked: bool
    keep_alive: bool
    upgrade: bool = False
    expect_continue: bool = False
    body: bytes = b""
    complete: bool = False


@dataclass
class Outcome:
    """What a reader made of a byte stream: the requests it read whole, then how
    the stream ended: "ok" (nothing pending), "incomplete" (a message started and
    needs more bytes), "rejected" (with a status for ours), "upgrade", or "closed"
    (h11: the connection must close after the last request)."""

    requests: list[Parsed] = field(default_factory=list)
    end: str = "ok"
    status: int = 0
    reason: str = ""


class Recorder:
    """A `RequestEvents` sink that records what the reader reported."""

    def __init__(self) -> None:
        self.requests: list[Parsed] = []
        self.started = 0
        self.exchanges: list[Exchange] = []

    def head_started(self) -> None:
        self.started += 1

    def head_received(self, ex: Exchange, has_body: bool, expect_continue: bool) -> None:
        self.exchanges.append(ex)
        self.requests.append(Parsed(
            ex.method, ex.target, ex.lookup.get("host"), list(ex.headers), ex.content_length,
            has_body and ex.content_length is None, ex.keep_alive, ex.upgrade, expect_continue))

    def body_data(self, data: bytes) -> None:
        self.requests[-1].body += data

    def message_complete(self) -> None:
        self.requests[-1].complete = True


def read_with_gateway(data: bytes, pieces: list[int] | None = None, limits: WireLimits | None = None) -> Outcome:
    """Feed `data` to the gateway's reader (split at `pieces` offsets when given)."""
    sink = Recorder()
    reader = RequestReader(sink, limits or WireLimits())
    cuts = sorted({0, *(p for p in (pieces or []) if 0 < p < len(data)), len(data)})
    outcome = Outcome()
    try:
        for start, end in itertools.pairwise(cuts):
            piece = data[start:end]
            used = reader.feed(piece)
            if reader.upgraded:
                outcome.end = "upgrade"
                break
            assert used == len(piece), "an unpaused reader consumes everything"
    except WireError as exc:
        outcome.end, outcome.status, outcome.reason = "rejected", exc.status, exc.message
    outcome.requests = [r for r in sink.requests if r.complete]
    if outcome.end == "ok" and (sink.started > len(outcome.requests) or reader.in_body):
        outcome.end = "incomplete"
    return outcome


def read_with_h11(data: bytes) -> Outcome:
    """The same stream read by an h11 server connection; each complete request
    gets a minimal answer so the next one can be read (h11 reads one at a time)."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    outcome = Outcome()
    current: Parsed | None = None
    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                outcome.end = "incomplete" if (current is not None or conn.trailing_data[0]) else "ok"
                return outcome
            if event is h11.PAUSED:
                outcome.end = "upgrade" if conn.their_state is MIGHT_SWITCH_PROTOCOL else "closed"
                return outcome
            if isinstance(event, h11.Request):
                headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in event.headers.raw_items()]
                lookup = {k.lower(): v for k, v in headers}
                target = event.target.decode("latin-1")
                host = lookup.get("host")
                split = urlsplit(target)
                if split.scheme and split.netloc:
                    host = split.netloc
                    target = (split.path or "/") + (f"?{split.query}" if split.query else "")
                te = lookup.get("transfer-encoding")
                cl = lookup.get("content-length")
                current = Parsed(event.method.decode(), target, host, headers,
                                 None if te is not None or cl is None else int(cl), te is not None,
                                 conn.their_state is not h11.MUST_CLOSE)
            elif isinstance(event, h11.Data) and current is not None:
                current.body += bytes(event.data)
            elif isinstance(event, h11.EndOfMessage) and current is not None:
                current.complete = True
                current.keep_alive = conn.their_state is not h11.MUST_CLOSE
                outcome.requests.append(current)
                current = None
                if conn.their_state is h11.MUST_CLOSE:
                    outcome.end = "closed"
                    return outcome
                if conn.their_state is MIGHT_SWITCH_PROTOCOL:
                    current_upgrade = outcome.requests[-1]
                    current_upgrade.upgrade = True
                    outcome.end = "upgrade"
                    return outcome
                conn.send(h11.Response(status_code=200, headers=[("Content-Length", "0")]))
                conn.send(h11.EndOfMessage())
                conn.start_next_cycle()
    except h11.RemoteProtocolError as exc:
        outcome.end, outcome.reason = "rejected", str(exc)
        return outcome


# -- raw sockets ----------------------------------------------------------------------

class Flooder:
    """A client that writes `data` and never reads: a plain non-blocking socket fed
    by the loop from the caller's buffer (no copy held in a transport, so the test
    process's RSS measures the gateway, not the client)."""

    def __init__(self, sock: socket.socket, task: asyncio.Task[None]) -> None:
        self.sock = sock
        self.task = task

    @classmethod
    async def start(cls, port: int, data: bytes, host: str = "127.0.0.1") -> Flooder:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # A small receive window, so the answers back up in the gateway rather than in
        # the kernel's buffers (which autotune to megabytes on loopback).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await loop.sock_connect(sock, (host, port))

        async def send() -> None:
            with contextlib.suppress(OSError):
                await loop.sock_sendall(sock, data)

        return cls(sock, asyncio.create_task(send()))

    async def close(self) -> None:
        """Leave abruptly (a reset): with unsent bytes queued, a FIN would wait behind
        them forever, since the gateway is not reading."""
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, OSError):
            await self.task
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


async def send_without_reading(port: int, data: bytes, host: str = "127.0.0.1",
                               chunk: int = 65536) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open a stream connection and write `data` without ever reading."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.transport.set_write_buffer_limits(high=chunk)
    writer.write(data)
    return reader, writer


async def close_quietly(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError, OSError):
        await writer.wait_closed()


async def read_until_closed(reader: asyncio.StreamReader, timeout_s: float) -> bytes:
    """Everything the gateway sends until it closes (or `timeout_s` passes)."""
    out = bytearray()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            return bytes(out)
        try:
            chunk = await asyncio.wait_for(reader.read(65536), remaining)
        except (TimeoutError, ConnectionError):
            return bytes(out)
        if not chunk:
            return bytes(out)
        out.extend(chunk)


def responses_in(answer: bytes, head_requests: int = 0) -> list[tuple[int, dict[str, str], bytes]]:
    """Every whole response in `answer`, in order: (status, headers by lower-case
    name, body). Bodies framed by Content-Length or chunks; 1xx, 204 and 304 have none;
    the first `head_requests` answers are to HEAD requests. Stops at the first partial one."""
    out: list[tuple[int, dict[str, str], bytes]] = []
    pos = 0
    while pos < len(answer):
        end = answer.find(b"\r\n\r\n", pos)
        if end < 0:
            break
        lines = answer[pos:end].decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        pos = end + 4
        body = b""
        if len(out) < head_requests or status < 200 or status in (204, 304):
            pass
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                line_end = answer.find(b"\r\n", pos)
                if line_end < 0:
                    return out
                size = int(answer[pos:line_end].split(b";")[0], 16)
                pos = line_end + 2
                if size == 0:
                    pos = answer.find(b"\r\n", pos) + 2
                    break
                body += answer[pos:pos + size]
                pos += size + 2
        elif "content-length" in headers:
            length = int(headers["content-length"])
            if pos + length > len(answer):
                return out
            body = answer[pos:pos + length]
            pos += length
        else:
            body = answer[pos:]
            pos = len(answer)
        out.append((status, headers, body))
    return out


def http_server_of(gateway: Gateway) -> HttpServer:
    """The `HttpServer` of the gateway fixture's public listener."""
    return gateway.server
