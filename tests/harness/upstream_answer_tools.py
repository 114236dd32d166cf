"""Tools for the upstream-pool, upgrade-answer and lingering-close tests
(tests/adversarial/test_wire_upstream_pool.py, test_wire_upgrade_answers.py,
test_wire_lingering.py): a scripted raw upstream that tags every answer with
the path it answers and records which connection each request came on, odd
answers built from parts, and clients that upload and then read (or never
close, or keep sending) against a gateway.

Plain helpers; the gateways come from `gateway_factory`
(tests/harness/app_fixtures.py)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from tests.harness.app_fixtures import service
from vocelio_contract.config import Endpoint, GatewayConfig


def tagged(path: bytes) -> bytes:
    """The upstream's answer to `path`: its body names the request it answers."""
    body = b"TAG " + path
    return b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % len(body) + body


def tag_of(body: bytes) -> bytes | None:
    return body[4:] if body.startswith(b"TAG ") else None


@dataclass(frozen=True)
class OddAnswer:
    """What the upstream writes for one request: `head` (and anything written with
    it, in one write), then `late` bytes: never (`when` "never"), once the next
    request arrives on the same connection ("next"; written anyway, while the
    connection is idle, if none comes within `wait_s`), or after `wait_s` ("later")."""

    head: bytes
    late: bytes = b""
    when: str = "never"
    wait_s: float = 0.2


@dataclass
class ScriptedUpstream:
    """A raw HTTP/1.1 upstream. A request whose path is in `script` gets that
    `OddAnswer`; every other request gets `tagged(path)`. `seen` records
    (connection number, method, path) of every request, in arrival order."""

    script: dict[bytes, OddAnswer] = field(default_factory=dict)
    seen: list[tuple[int, bytes, bytes]] = field(default_factory=list)
    port: int = 0
    _numbers: itertools.count[int] = field(default_factory=itertools.count)

    def connection_of(self, path: bytes) -> int:
        return next(conn for conn, _, seen_path in self.seen if seen_path == path)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number = next(self._numbers)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            while True:
                method, path = head.split(b" ", 2)[:2]
                self.seen.append((number, method, path))
                odd = self.script.get(path)
                if odd is None:
                    writer.write(tagged(path))
                    await writer.drain()
                    head = await reader.readuntil(b"\r\n\r\n")
                    continue
                writer.write(odd.head)
                await writer.drain()
                if odd.when == "later":
                    await asyncio.sleep(odd.wait_s)
                elif odd.when == "next":
                    try:
                        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), odd.wait_s)
                    except TimeoutError:
                        pass
                    else:
                        # The next request is here: the late bytes first, as a sloppy server would.
                        writer.write(odd.late)
                        await writer.drain()
                        continue
                if odd.late:
                    writer.write(odd.late)
                    await writer.drain()
                head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def scripted_upstream() -> AsyncIterator[ScriptedUpstream]:
    up = ScriptedUpstream()
    server = await asyncio.start_server(up.serve, "127.0.0.1", 0)
    up.port = int(server.sockets[0].getsockname()[1])
    try:
        yield up
    finally:
        server.close()


def plain_config(port: int) -> GatewayConfig:
    """One service `svc` on `port` (paths /api/v1/svc/x reach the upstream as /x): no
    health checks, no retries, no breaker and no ejection, so every answer is the
    upstream's own."""
    return GatewayConfig(services=[service(
        "svc", Endpoint(address="127.0.0.1", port=port), health_check={"enabled": False},
        retry={"attempts": 1}, passive_health={"consecutive_failures": 1000},
        circuit_breaker={"enabled": False})])


async def upload_then_read(port: int, head: bytes, body: bytes, *, after: bytes = b"",
                           settle_s: float = 0.3, read_timeout_s: float = 3.0) -> bytes:
    """A client that writes its whole request (and `after`) at once, waits, then reads
    what arrives before a close or a reset (as curl does with a body it already wrote)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    out = bytearray()
    try:
        writer.write(head + body + after)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        await asyncio.sleep(settle_s)
        with contextlib.suppress(ConnectionError, TimeoutError):
            while True:
                chunk = await asyncio.wait_for(reader.read(65536), read_timeout_s)
                if not chunk:
                    break
                out.extend(chunk)
        return bytes(out)
    finally:
        writer.transport.abort()


async def read_answer(reader: asyncio.StreamReader, timeout_s: float = 3.0) -> bytes:
    """Bytes until the gateway's end of stream (its FIN) or `timeout_s`."""
    out = bytearray()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    with contextlib.suppress(ConnectionError, TimeoutError):
        while (left := deadline - loop.time()) > 0:
            chunk = await asyncio.wait_for(reader.read(65536), left)
            if not chunk:
                break
            out.extend(chunk)
    return bytes(out)


@dataclass
class OneShotUpstream:
    """A raw upstream that answers the first request head on each connection with
    `answer(head)`, then keeps writing `endless` (if any) until the peer goes,
    then closes (`close`) or waits for the peer to close. `heads` records the
    request heads; `connections` counts connections."""

    answer: Callable[[bytes], bytes]
    close: bool = False
    endless: bytes = b""
    heads: list[bytes] = field(default_factory=list)
    connections: int = 0
    port: int = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.heads.append(head)
            writer.write(self.answer(head))
            await writer.drain()
            while self.endless:
                writer.write(self.endless)
                await writer.drain()
            if not self.close:
                await reader.read()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def one_shot_upstream(answer: Callable[[bytes], bytes], *, close: bool = False,
                            endless: bytes = b"") -> AsyncIterator[OneShotUpstream]:
    up = OneShotUpstream(answer, close, endless)
    server = await asyncio.start_server(up.serve, "127.0.0.1", 0)
    up.port = int(server.sockets[0].getsockname()[1])
    try:
        yield up
    finally:
        server.close()
