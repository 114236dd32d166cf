"""Fixtures for gateway application tests, loaded as a pytest plugin by
tests/conftest.py: real upstream HTTP servers on loopback (aiohttp apps, or raw
asyncio servers that write exact bytes), and a gateway started in-process
against them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import IO, Any

import aiohttp
import pytest
from aiohttp import web

from vocelio_contract.config import Backend, Endpoint, GatewayConfig, Service
from vocelio_proxy.clock import Clock
from vocelio_proxy.lifecycle import appkeys as keys
from vocelio_proxy.lifecycle.app import RunningGateway, create_app, start_gateway
from vocelio_proxy.lifecycle.sources import ConfigSource, StaticSource
from vocelio_proxy.process.accesslog import AccessLog
from vocelio_proxy.process.state import GatewayState
from vocelio_proxy.settings import ProxySettings
from vocelio_proxy.wire.server import HttpServer

from .waiting import poll_async


@dataclass
class Upstream:
    port: int
    hits: list[str] = field(default_factory=list)
    health_status: int = 200

    def endpoint(self, weight: int = 1) -> Endpoint:
        return Endpoint(address="127.0.0.1", port=self.port, weight=weight)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


#: What the `upstream_factory` fixture gives a test: `await make(handler=None, name="up")`.
UpstreamFactory = Callable[..., Awaitable[Upstream]]
#: What the `raw_upstream` fixture gives a test: `await make(respond)` -> port.
RawUpstreamFactory = Callable[[Callable[[bytes], bytes | None]], Awaitable[int]]


@pytest.fixture
async def upstream_factory() -> AsyncIterator[UpstreamFactory]:
    runners: list[web.AppRunner] = []

    async def make(handler: Handler | None = None, name: str = "up") -> Upstream:
        up = Upstream(0)

        async def health(request: web.Request) -> web.Response:
            return web.Response(status=up.health_status, text="ok")

        async def default(request: web.Request) -> web.StreamResponse:
            body = await request.read()
            return web.json_response({"upstream": name, "path": request.path_qs, "method": request.method,
                                      "body": len(body), "headers": dict(request.headers)})

        async def record(request: web.Request) -> web.StreamResponse:
            up.hits.append(request.path_qs)
            return await (handler or default)(request)

        app = web.Application()
        app.router.add_get("/health", health)
        app.router.add_route("*", "/{tail:.*}", record)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        up.port = runner.addresses[0][1]
        return up

    yield make
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def raw_upstream() -> AsyncIterator[RawUpstreamFactory]:
    """A TCP server that answers each request with exact bytes (`respond(request_head)`)."""
    servers: list[asyncio.Server] = []

    async def make(respond: Callable[[bytes], bytes | None]) -> int:
        async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while True:
                    head = await reader.readuntil(b"\r\n\r\n")
                    for line in head.split(b"\r\n"):
                        if line.lower().startswith(b"content-length:"):
                            await reader.readexactly(int(line.split(b":")[1]))
                    answer = respond(head)
                    if answer is None:
                        break
                    writer.write(answer)
                    await writer.drain()
                    if b"connection: close" in answer.lower():
                        break
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(on_client, "127.0.0.1", 0)
        servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    yield make
    for server in servers:
        server.close()


def service(name: str, *endpoints: Endpoint, prefixes: list[str] | None = None, **kw: Any) -> Service:
    return Service(name=name, prefixes=prefixes or [f"/api/v1/{name}"], rewrite=kw.pop("rewrite", "/"),
                   backends=[Backend(name="b", endpoints=list(endpoints))], **kw)


@dataclass
class Gateway:
    url: str
    app: web.Application
    session: aiohttp.ClientSession
    #: The public listener's HTTP server.
    server: HttpServer

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    @property
    def state(self) -> GatewayState:
        return self.app[keys.STATE]

    async def get(self, path: str, **kw: Any) -> tuple[int, dict[str, str], bytes]:
        return await self.request("GET", path, **kw)

    async def request(self, method: str, path: str, **kw: Any) -> tuple[int, dict[str, str], bytes]:
        async with self.session.request(method, self.url + path, **kw) as resp:
            return resp.status, dict(resp.headers), await resp.read()


#: What the `gateway_factory` fixture gives a test: `await make(config, ..., **settings)`.
GatewayFactory = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def gateway_factory() -> AsyncIterator[GatewayFactory]:
    running: list[RunningGateway] = []
    sessions: list[aiohttp.ClientSession] = []

    async def make(config: GatewayConfig | None = None, source: ConfigSource | None = None,
                   wait_ready: bool = True, clock: Clock | None = None, access_log_sink: IO[bytes] | None = None,
                   **settings: Any) -> Gateway:
        if source is None and config is not None:
            source = StaticSource(config.seal())
        settings.setdefault("access_log", False)
        app = create_app(ProxySettings(port=0, **settings), source, clock=clock)
        if access_log_sink is not None:
            app[keys.ACCESS_LOG] = AccessLog(access_log_sink)
        started = await start_gateway(app, "127.0.0.1", 0)
        running.append(started)
        session = aiohttp.ClientSession()
        sessions.append(session)
        gw = Gateway(f"http://127.0.0.1:{started.port}", app, session, started.server)
        if wait_ready:
            await poll(lambda: gw.state.runtime is not None and gw.state.health_round_done, "gateway ready")
        return gw

    yield make
    for session in sessions:
        await session.close()
    for gateway in running:
        await gateway.stop(2.0)


async def poll(check: Callable[[], object], what: str, deadline_s: float = 5.0) -> None:
    """Wait for a synchronous condition with a deadline (see `waiting.poll_async`)."""

    async def checked() -> bool:
        return bool(check())

    await poll_async(what, checked, deadline_s, interval=0.02)
