"""A floor for the proxy's CPU per request, for `bench/cpu_per_request.py`-style
comparisons: HTTP/1.1 downstream on httptools plus the gateway's own upstream
pool and parser, with no policy at all (GET only, no routing, no headers policy).
Not a product path: it shows what the transport costs so profiles can tell how
much of the gateway's time is its own logic. Usage: floor_proxy.py PORT BACKEND_PORT."""

from __future__ import annotations

import asyncio
import sys

import httptools
import uvloop

from vocelio_proxy.wire.upstream import UpstreamPool, request_head

_SKIP = (b"host", b"connection")


class FloorProtocol(asyncio.Protocol):
    def __init__(self, pool: UpstreamPool, backend: int) -> None:
        self.pool = pool
        self.backend = backend
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_url(self, url: bytes) -> None:
        self.url = url
        self.headers = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_message_complete(self) -> None:
        task = asyncio.ensure_future(self.forward(self.url, self.headers))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def forward(self, url: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        conn = await self.pool.acquire("127.0.0.1", self.backend, 2)
        fwd = [(k.decode(), v.decode()) for k, v in headers if k.lower() not in _SKIP]
        response = await conn.start_request(request_head("GET", url.decode(), "backend", fwd, 0), "GET", 30)
        body = conn.body_complete_buffered() or b""
        self.pool.release(conn)
        out = [b"HTTP/1.1 %d OK\r\n" % response.status]
        out += [f"{k}: {v}\r\n".encode() for k, v in response.headers
                if k.lower() not in ("content-length", "connection")]
        out.append(b"Content-Length: %d\r\n\r\n" % len(body))
        out.append(body)
        assert self.transport is not None
        self.transport.write(b"".join(out))


async def main(port: int, backend: int) -> None:
    pool = UpstreamPool()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: FloorProtocol(pool, backend), "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]), int(sys.argv[2])))
