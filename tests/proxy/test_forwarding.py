"""Requests reach the right upstream with the right path and headers, and
bodies stream both ways."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from tests.harness.app_fixtures import GatewayFactory, UpstreamFactory, service
from vocelio_contract.config import GatewayConfig


async def test_both_url_forms_reach_the_service_with_the_prefix_rewritten(upstream_factory: UpstreamFactory,
                                                                          gateway_factory: GatewayFactory) -> None:
    up = await upstream_factory()
    gw = await gateway_factory(GatewayConfig(services=[
        service("ai-agents", up.endpoint(), prefixes=["/api/v1/ai-agents", "/ai-agents/v1"])]))
    for path in ("/api/v1/ai-agents/agents?limit=5", "/ai-agents/v1/agents?limit=5"):
        status, _, body = await gw.get(path)
        assert status == 200
        assert json.loads(body)["path"] == "/agents?limit=5"


async def test_forwarded_headers_request_id_and_trace_are_set(upstream_factory: UpstreamFactory,
                                                              gateway_factory: GatewayFactory) -> None:
    up = await upstream_factory()
    gw = await gateway_factory(GatewayConfig(services=[service("svc", up.endpoint())]))
    trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    status, headers, body = await gw.get("/api/v1/svc/x", headers={
        "X-Request-ID": "client-42", "traceparent": trace, "X-Forwarded-For": "6.6.6.6",
        "X-Vocelio-User": "admin", "X-Vocelio-Roles": "admin", "Connection": "keep-alive, X-Drop", "X-Drop": "1"})
    sent = json.loads(body)["headers"]
    assert status == 200
    assert headers["X-Request-ID"] == "client-42" == sent["X-Request-ID"]
    assert sent["X-Forwarded-For"] == "127.0.0.1"
    assert sent["X-Forwarded-Proto"] == "http"
    assert sent["traceparent"] == trace  # passed through: the gateway exports no span of its own
    assert "X-Vocelio-User" not in sent
    assert "X-Vocelio-Roles" not in sent
    assert "X-Drop" not in sent


async def test_large_bodies_stream_both_ways(upstream_factory: UpstreamFactory,
                                             gateway_factory: GatewayFactory) -> None:
    async def stream(request: web.Request) -> web.StreamResponse:
        total = 0
        async for chunk in request.content.iter_any():
            total += len(chunk)
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for _ in range(64):
            await resp.write(b"y" * 65536)
        await resp.write(str(total).encode())
        await resp.write_eof()
        return resp

    up = await upstream_factory(stream)
    gw = await gateway_factory(GatewayConfig(services=[service("svc", up.endpoint())]))

    async def upload() -> AsyncIterator[bytes]:
        for _ in range(80):
            yield b"x" * 65536

    status, _, body = await gw.request("POST", "/api/v1/svc/upload", data=upload())
    assert status == 200
    assert len(body) == 64 * 65536 + len(str(80 * 65536))
    assert body.endswith(str(80 * 65536).encode())


async def test_upstream_response_headers_and_status_pass_through(upstream_factory: UpstreamFactory,
                                                                 gateway_factory: GatewayFactory) -> None:
    async def created(request: web.Request) -> web.StreamResponse:
        return web.Response(status=201, text="made", headers={"X-Frame-Options": "SAMEORIGIN", "X-App": "1"})

    up = await upstream_factory(created)
    gw = await gateway_factory(GatewayConfig(services=[service("svc", up.endpoint())]))
    status, headers, body = await gw.request("PUT", "/api/v1/svc/thing", data=b"{}")
    assert (status, body) == (201, b"made")
    assert headers["X-App"] == "1"
    assert headers["X-Frame-Options"] == "SAMEORIGIN"  # the upstream's deliberate value is kept
    assert headers["X-Content-Type-Options"] == "nosniff"


async def test_websocket_upgrades_are_relayed(upstream_factory: UpstreamFactory,
                                              gateway_factory: GatewayFactory) -> None:
    async def ws(request: web.Request) -> web.StreamResponse:
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        async for msg in sock:
            await sock.send_str("echo:" + msg.data)
        return sock

    up = await upstream_factory(ws)
    gw = await gateway_factory(GatewayConfig(services=[service("svc", up.endpoint())]))
    async with gw.session.ws_connect(gw.url + "/api/v1/svc/socket") as sock:
        await sock.send_str("hello")
        msg = await sock.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.TEXT
        assert msg.data == "echo:hello"


async def test_keep_alive_connections_are_reused(upstream_factory: UpstreamFactory,
                                                 gateway_factory: GatewayFactory) -> None:
    up = await upstream_factory()
    gw = await gateway_factory(GatewayConfig(services=[service("svc", up.endpoint())]))
    from vocelio_proxy.lifecycle import appkeys as keys

    for _ in range(20):
        status, _, _ = await gw.get("/api/v1/svc/x")
        assert status == 200
    assert gw.app[keys.POOL].created == 1
