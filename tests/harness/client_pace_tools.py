"""Tools for the client-pace tests (tests/adversarial/test_client_pace.py, test_trust_inputs.py):
clients that upload slowly or read slowly, upstreams that give up on a connection
the gateway holds back (as a real server's send timeout does) or that answer late,
and readers for the breaker's and passive health's view of a service.

Plain helpers on top of `recording_upstream` / `gateway_factory`
(tests/harness/hostile.py, tests/harness/app_fixtures.py)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from tests.harness.app_fixtures import Gateway


async def trickle(port: int, head: bytes, pieces: list[bytes], every_s: float, *,
                  read_timeout_s: float = 5.0) -> bytes:
    """Send `head`, then each piece `every_s` apart (never stalling long enough for a
    body timeout), while reading the answer until the gateway closes or
    `read_timeout_s`. The answer is collected as it arrives: a gateway that answered
    early and closed may reset the rest of the upload."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    out = bytearray()

    async def read() -> None:
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(65536):
                out.extend(chunk)

    reading = asyncio.create_task(read())
    try:
        writer.write(head)
        await writer.drain()
        for piece in pieces:
            await asyncio.sleep(every_s)
            if reading.done():
                break
            writer.write(piece)
            await writer.drain()
    except ConnectionError:
        pass
    try:
        await asyncio.wait_for(reading, read_timeout_s)
    except TimeoutError:
        pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return bytes(out)


def ejections(gw: Gateway, name: str = "svc") -> list[int]:
    """Passive-health ejections of each endpoint of a service."""
    rt = gw.state.runtime
    assert rt is not None
    return [ep.ejections for ep in rt.services[f"default/{name}"].balancer.endpoints()]


@dataclass
class GivingUpUpstream:
    """An upstream that answers every request with a large body and gives up on the
    connection (a reset) when the gateway stops taking bytes for `give_up_s`, the way
    a server's send timeout does; or, with `cut_after` set, resets after sending that
    many body bytes whatever the gateway does (a genuinely failing upstream)."""

    give_up_s: float = 0.3
    cut_after: int | None = None
    port: int = 0
    gave_up: int = 0
    cut: int = 0
    served: int = 0
    _server: asyncio.Server | None = field(default=None, repr=False)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                self.served += 1
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                             b"Content-Length: 1000000000\r\n\r\n")
                sent = 0
                block = b"x" * 16384
                while True:
                    if self.cut_after is not None and sent >= self.cut_after:
                        self.cut += 1
                        writer.transport.abort()
                        return
                    writer.write(block)
                    sent += len(block)
                    try:
                        await asyncio.wait_for(writer.drain(), self.give_up_s)
                    except TimeoutError:
                        self.gave_up += 1
                        writer.transport.abort()
                        return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    @property
    def address(self) -> tuple[str, int]:
        return "127.0.0.1", self.port


@contextlib.asynccontextmanager
async def giving_up_upstream(give_up_s: float = 0.3, cut_after: int | None = None
                             ) -> AsyncIterator[GivingUpUpstream]:
    up = GivingUpUpstream(give_up_s=give_up_s, cut_after=cut_after)
    server = await asyncio.start_server(up.serve, "127.0.0.1", 0)
    up.port = int(server.sockets[0].getsockname()[1])
    try:
        yield up
    finally:
        server.close()


async def slow_reader(port: int, request: bytes, pause_s: float, *, rcvbuf: int = 4096,
                      read_timeout_s: float = 10.0) -> int:
    """Send `request` on a socket with a small receive buffer, take nothing for
    `pause_s`, then read everything until the gateway closes; returns the bytes read."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock)
    total = 0
    try:
        writer.write(request)
        await writer.drain()
        await asyncio.sleep(pause_s)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)  # then read at full speed
        async with asyncio.timeout(read_timeout_s):
            while chunk := await reader.read(1 << 20):
                total += len(chunk)
    except (TimeoutError, ConnectionError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return total
