"""Timeouts, retries, circuit breakers and health-based ejection against real
upstreams, each answered with the JSON error envelope."""

from __future__ import annotations

import asyncio
import json
import socket

from aiohttp import web

from tests.harness.app_fixtures import GatewayFactory, UpstreamFactory, poll, service
from vocelio_contract.config import Endpoint, GatewayConfig


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def envelope(body: bytes) -> dict[str, object]:
    data = json.loads(body)
    assert set(data) >= {"error", "message", "status_code", "timestamp", "request_id"}
    return data  # type: ignore[no-any-return]


async def test_a_slow_upstream_gets_a_504_envelope(upstream_factory: UpstreamFactory,
                                                   gateway_factory: GatewayFactory) -> None:
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.StreamResponse:
        await release.wait()
        return web.Response(text="late")

    up = await upstream_factory(slow)
    gw = await gateway_factory(GatewayConfig(services=[service(
        "svc", up.endpoint(), timeouts={"request_s": 0.2}, retry={"attempts": 1})]))
    status, headers, body = await gw.get("/api/v1/svc/x")
    release.set()
    data = envelope(body)
    assert status == 504 == data["status_code"]
    assert data["request_id"] == headers["X-Request-ID"]


async def test_connect_failures_are_retried_on_another_endpoint(upstream_factory: UpstreamFactory,
                                                                gateway_factory: GatewayFactory) -> None:
    up = await upstream_factory()
    dead = Endpoint(address="127.0.0.1", port=closed_port())
    gw = await gateway_factory(GatewayConfig(services=[service(
        "svc", dead, up.endpoint(), health_check={"enabled": False})]))
    for _ in range(4):
        status, _, _ = await gw.request("POST", "/api/v1/svc/x", data=b"{}")
        assert status == 200  # connect failures are safe to retry, even for POST
    assert len(up.hits) == 4


async def test_idempotent_requests_are_retried_on_503_and_posts_are_not(upstream_factory: UpstreamFactory,
                                                                        gateway_factory: GatewayFactory) -> None:
    async def unavailable(request: web.Request) -> web.StreamResponse:
        return web.Response(status=503, text="busy")

    bad = await upstream_factory(unavailable)
    good = await upstream_factory()
    gw = await gateway_factory(GatewayConfig(services=[service(
        "svc", bad.endpoint(), good.endpoint(), circuit_breaker={"enabled": False},
        passive_health={"consecutive_failures": 1000})]))
    get_statuses = [(await gw.get("/api/v1/svc/x"))[0] for _ in range(4)]
    assert get_statuses == [200, 200, 200, 200]
    post_statuses = {(await gw.request("POST", "/api/v1/svc/x", data=b"1"))[0] for _ in range(4)}
    assert post_statuses == {200, 503}


async def test_open_breaker_returns_503_with_retry_after_without_touching_upstream(
        upstream_factory: UpstreamFactory, gateway_factory: GatewayFactory) -> None:
    async def failing(request: web.Request) -> web.StreamResponse:
        return web.Response(status=500, text="boom")

    up = await upstream_factory(failing)
    gw = await gateway_factory(GatewayConfig(services=[service(
        "svc", up.endpoint(), circuit_breaker={"consecutive_failures": 3, "open_s": 30, "half_open_max_probes": 1},
        passive_health={"consecutive_failures": 1000})]))
    for _ in range(3):
        assert (await gw.get("/api/v1/svc/x"))[0] == 500
    hits = len(up.hits)
    status, headers, body = await gw.get("/api/v1/svc/x")
    data = envelope(body)
    assert status == 503
    assert data["status_code"] == 503
    assert int(headers["Retry-After"]) >= 29
    assert data["retry_after"] == int(headers["Retry-After"])
    assert len(up.hits) == hits
    status_doc = json.loads((await gw.get("/status"))[2])
    assert status_doc["services"][0]["breaker"] == "open"
    metrics = (await gw.get("/metrics"))[2].decode()
    assert 'vocelio_circuit_breaker_state{service="default/svc"} 2.0' in metrics


async def test_failing_health_checks_eject_an_endpoint_and_recovery_restores_it(
        upstream_factory: UpstreamFactory, gateway_factory: GatewayFactory) -> None:
    a = await upstream_factory(name="a")
    b = await upstream_factory(name="b")
    hc = {"interval_s": 0.05, "timeout_s": 0.5, "healthy_threshold": 1, "unhealthy_threshold": 1}
    gw = await gateway_factory(GatewayConfig(services=[service("svc", a.endpoint(), b.endpoint(), health_check=hc,
                                                               load_balancing={"panic_threshold_percent": 0})]))
    svc = next(iter(gw.state.runtime.services.values()))  # type: ignore[union-attr]
    b.health_status = 500
    await poll(lambda: svc.balancer.counts() == (1, 2), "b ejected by health checks")
    a.hits.clear()
    b.hits.clear()
    for _ in range(6):
        assert (await gw.get("/api/v1/svc/x"))[0] == 200
    assert len(a.hits) == 6
    assert not b.hits
    b.health_status = 200
    await poll(lambda: svc.balancer.counts() == (2, 2), "b back in rotation")
    for _ in range(6):
        await gw.get("/api/v1/svc/x")
    assert b.hits


async def test_passive_failures_eject_an_endpoint_from_real_traffic(upstream_factory: UpstreamFactory,
                                                                    gateway_factory: GatewayFactory) -> None:
    async def failing(request: web.Request) -> web.StreamResponse:
        return web.Response(status=502)

    bad = await upstream_factory(failing)
    good = await upstream_factory()
    gw = await gateway_factory(GatewayConfig(services=[service(
        "svc", bad.endpoint(), good.endpoint(), retry={"attempts": 1}, circuit_breaker={"enabled": False},
        passive_health={"consecutive_failures": 2, "base_ejection_s": 60},
        load_balancing={"panic_threshold_percent": 0})]))
    statuses = [(await gw.get("/api/v1/svc/x"))[0] for _ in range(10)]
    assert statuses.count(502) == 2
    assert statuses[-4:] == [200, 200, 200, 200]


async def test_no_healthy_endpoint_is_a_503_envelope(gateway_factory: GatewayFactory) -> None:
    gw = await gateway_factory(GatewayConfig(services=[service("svc")]))
    status, headers, body = await gw.get("/api/v1/svc/x")
    assert status == 503
    assert "Retry-After" in headers
    assert "no healthy endpoint" in envelope(body)["message"]  # type: ignore[operator]


async def test_the_retry_budget_keeps_retries_from_multiplying_load_during_an_outage(
        upstream_factory: UpstreamFactory, gateway_factory: GatewayFactory) -> None:
    async def unavailable(request: web.Request) -> web.StreamResponse:
        return web.Response(status=503)

    a = await upstream_factory(unavailable)
    b = await upstream_factory(unavailable)
    gw = await gateway_factory(GatewayConfig(services=[service(
        "svc", a.endpoint(), b.endpoint(), retry={"attempts": 3, "budget_percent": 20, "min_retries_per_s": 0.5},
        circuit_breaker={"enabled": False}, passive_health={"consecutive_failures": 1000},
        health_check={"enabled": False})]))
    for _ in range(100):
        assert (await gw.get("/api/v1/svc/x"))[0] == 503
    upstream_calls = len(a.hits) + len(b.hits)
    # Without a budget, 3 attempts each would be 300 calls; the budget allows 20% more than the requests.
    assert 100 < upstream_calls <= 100 + 20 + 5
