"""Hot reload from a mounted ConfigMap, the gateway's own endpoints, the error
envelope for bad requests, readiness, and graceful drain."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from aiohttp import web

from tests.harness.app_fixtures import GatewayFactory, UpstreamFactory, poll, service
from tests.harness.mount import write_configmap_volume
from vocelio_contract.config import GatewayConfig
from vocelio_proxy.lifecycle import appkeys as keys
from vocelio_proxy.lifecycle.app import create_app, serve
from vocelio_proxy.lifecycle.sources import FileSource
from vocelio_proxy.settings import ProxySettings


async def test_a_configmap_swap_is_applied_within_two_seconds(upstream_factory: UpstreamFactory,
                                                              gateway_factory: GatewayFactory, tmp_path: Path) -> None:
    a = await upstream_factory(name="a")
    b = await upstream_factory(name="b")
    first = GatewayConfig(services=[service("one", a.endpoint())]).seal()
    write_configmap_volume(tmp_path, {"gateway.json": first.to_json().encode()})
    gw = await gateway_factory(source=FileSource(tmp_path / "gateway.json"), config_poll_s=0.1)
    assert (await gw.get("/api/v1/one/x"))[0] == 200
    assert (await gw.get("/api/v1/two/x"))[0] == 404

    second = GatewayConfig(services=[service("one", a.endpoint()), service("two", b.endpoint())]).seal()
    started = time.monotonic()
    write_configmap_volume(tmp_path, {"gateway.json": second.to_json().encode()})
    await poll(lambda: gw.state.runtime.config.hash == second.hash, "new config", 2.0)  # type: ignore[union-attr]
    assert time.monotonic() - started < 2.0
    status, _, body = await gw.get("/api/v1/two/x")
    assert status == 200
    assert json.loads(body)["upstream"] == "b"


async def test_an_invalid_config_never_replaces_the_last_good_one(upstream_factory: UpstreamFactory,
                                                                  gateway_factory: GatewayFactory,
                                                                  tmp_path: Path) -> None:
    up = await upstream_factory()
    good = GatewayConfig(services=[service("one", up.endpoint())]).seal()
    write_configmap_volume(tmp_path, {"gateway.json": good.to_json().encode()})
    gw = await gateway_factory(source=FileSource(tmp_path / "gateway.json"), config_poll_s=0.1)
    write_configmap_volume(tmp_path, {"gateway.json": b'{"services": [{"name": "BAD NAME"}]}'})
    await poll(lambda: gw.state.reloads_failed == 1, "rejected reload")
    assert gw.state.runtime.config.hash == good.hash  # type: ignore[union-attr]
    assert (await gw.get("/api/v1/one/x"))[0] == 200
    status_doc = json.loads((await gw.get("/status"))[2])
    assert "name" in status_doc["config"]["last_error"]
    assert status_doc["config"]["version"] == good.version
    metrics = (await gw.get("/metrics"))[2].decode()
    assert 'vocelio_config_reloads_total{result="invalid"} 1.0' in metrics


async def test_not_ready_until_a_config_is_loaded(gateway_factory: GatewayFactory, tmp_path: Path) -> None:
    gw = await gateway_factory(source=FileSource(tmp_path / "missing.json"), wait_ready=False, config_poll_s=0.05)
    status, _, body = await gw.get("/readyz")
    assert status == 503
    assert "configuration" in json.loads(body)["reason"]
    status, _, body = await gw.get("/api/v1/any")
    assert status == 503
    assert json.loads(body)["status_code"] == 503
    write_configmap_volume(tmp_path, {"missing.json": GatewayConfig().seal().to_json().encode()})
    await poll(lambda: gw.state.runtime is not None and gw.state.health_round_done, "config loaded")
    assert (await gw.get("/readyz"))[0] == 200


async def test_unknown_routes_and_bad_paths_get_the_error_envelope(upstream_factory: UpstreamFactory,
                                                                   gateway_factory: GatewayFactory) -> None:
    up = await upstream_factory()
    gw = await gateway_factory(GatewayConfig(services=[service("svc", up.endpoint())]))
    status, headers, body = await gw.get("/api/v1/nope")
    data = json.loads(body)
    assert status == 404
    assert data["status_code"] == 404
    assert data["error"] == "Not found"
    assert data["request_id"] == headers["X-Request-ID"]
    assert data["timestamp"].endswith("Z")
    status, _, body = await gw.get("/api/v1/svc%2F..%2Fx")
    assert status == 400
    assert json.loads(body)["status_code"] == 400
    status, _, _ = await gw.get("/api/v1/nope/../svc/ok")
    assert status == 200
    assert up.hits == ["/ok"]


async def test_health_reports_the_product_shape(upstream_factory: UpstreamFactory,
                                                gateway_factory: GatewayFactory) -> None:
    up = await upstream_factory()
    gw = await gateway_factory(GatewayConfig(services=[service("a", up.endpoint()), service("b", up.endpoint())]))
    status, _, body = await gw.get("/health")
    doc = json.loads(body)
    assert status == 200
    assert doc["status"] in ("healthy", "degraded")
    assert set(doc["gateway"]["checks"]) == {"memory", "cpu", "disk", "network"}
    assert doc["gateway"]["uptime"]["human_readable"].count(":") == 2
    assert doc["services"]["summary"]["total_services"] == 2
    assert doc["services"]["summary"]["healthy_instances"] == 2
    assert doc["services"]["summary"]["overall_health"] == 100.0


async def test_metrics_docs_and_info_are_served(upstream_factory: UpstreamFactory,
                                                gateway_factory: GatewayFactory) -> None:
    up = await upstream_factory()
    gw = await gateway_factory(GatewayConfig(services=[service("svc", up.endpoint())]))
    await gw.get("/api/v1/svc/x")
    metrics = (await gw.get("/metrics"))[2].decode()
    assert 'vocelio_requests_total{code="200",code_class="2xx",method="GET",service="svc"} 1.0' in metrics
    assert "vocelio_request_duration_seconds_bucket" in metrics
    assert "vocelio_upstream_duration_seconds_bucket" in metrics
    assert "vocelio_requests_in_flight" in metrics
    assert 'vocelio_endpoints_healthy{service="default/svc"} 1.0' in metrics
    assert "vocelio_config_info{" in metrics
    status, headers, page = await gw.get("/docs")
    assert status == 200
    assert b"/api/v1/svc" in page
    assert "Content-Security-Policy" in headers
    openapi = json.loads((await gw.get("/openapi.json"))[2])
    assert "/readyz" in openapi["paths"]
    root = json.loads((await gw.get("/"))[2])
    assert root["services"] == 1


async def test_sigterm_drains_in_flight_requests_and_turns_unready(upstream_factory: UpstreamFactory) -> None:
    release = asyncio.Event()
    arrived = asyncio.Event()

    async def slow(request: web.Request) -> web.StreamResponse:
        arrived.set()
        await release.wait()
        return web.Response(text="finished")

    up = await upstream_factory(slow)
    settings = ProxySettings(host="127.0.0.1", port=0, access_log=False, drain_timeout_s=5, shutdown_delay_s=0)
    from vocelio_proxy.lifecycle.sources import StaticSource

    app = create_app(settings, StaticSource(GatewayConfig(services=[service("svc", up.endpoint())]).seal()))
    stop = asyncio.Event()
    port_box: list[int] = []
    server = asyncio.create_task(serve(app, settings, lambda port: port_box.append(port), stop))
    await poll(lambda: port_box and app[keys.STATE].health_round_done, "gateway up")
    import aiohttp

    # An idle keep-alive connection: drain closes it rather than waiting for it.
    idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", port_box[0])
    idle_writer.write(b"GET /livez HTTP/1.1\r\nHost: t\r\n\r\n")
    head = await asyncio.wait_for(idle_reader.readuntil(b"\r\n\r\n"), 5)
    await idle_reader.readexactly(int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0]))
    async with aiohttp.ClientSession() as session:
        inflight = asyncio.create_task(session.get(f"http://127.0.0.1:{port_box[0]}/api/v1/svc/slow"))
        await asyncio.wait_for(arrived.wait(), 5)
        stop.set()
        await poll(lambda: app[keys.STATE].draining, "draining")
        assert await asyncio.wait_for(idle_reader.read(), 5) == b""
        release.set()
        resp = await inflight
        assert resp.status == 200
        assert await resp.text() == "finished"
        assert resp.headers["Connection"] == "close"
    await asyncio.wait_for(server, 10)
    idle_writer.close()
    with pytest.raises(ConnectionRefusedError):  # the listener is gone
        await asyncio.open_connection("127.0.0.1", port_box[0])


async def test_standalone_reports_invalid_documents_in_status_and_serves_the_rest(upstream_factory: UpstreamFactory,
                                                                                  gateway_factory: GatewayFactory,
                                                                                  tmp_path: Path) -> None:
    from vocelio_operator.local.files import FolderSource

    up = await upstream_factory()
    (tmp_path / "good.yaml").write_text(f"""apiVersion: gateway.vocelio.ai/v1alpha1
kind: VocelioService
metadata: {{name: good}}
spec:
  pathPrefix: /api/v1/good
  backends: [{{staticEndpoints: [{{address: 127.0.0.1, port: {up.port}}}]}}]
""")
    (tmp_path / "bad.yaml").write_text("""apiVersion: gateway.vocelio.ai/v1alpha1
kind: VocelioService
metadata: {name: bad}
spec: {pathPrefix: no-slash, backends: []}
""")
    gw = await gateway_factory(source=FolderSource(tmp_path), config_poll_s=0.05)
    assert (await gw.get("/api/v1/good/x"))[0] == 200
    problems = json.loads((await gw.get("/status"))[2])["config"]["source_problems"]
    assert len(problems) == 1
    assert "bad.yaml" in problems[0]
    assert "VocelioService/bad" in problems[0]
    assert "spec.pathPrefix" in problems[0]


async def test_a_config_path_that_is_a_fifo_is_a_rejected_reload_not_a_hang(upstream_factory: UpstreamFactory,
                                                                            gateway_factory: GatewayFactory,
                                                                            tmp_path: Path) -> None:
    import os

    up = await upstream_factory()
    path = tmp_path / "gateway.json"
    os.mkfifo(path)  # a blocking open would stall the watcher thread forever
    gw = await gateway_factory(source=FileSource(path), wait_ready=False, config_poll_s=0.05)
    await poll(lambda: gw.state.reloads_failed >= 1, "rejected reload")
    status_doc = json.loads((await gw.get("/status"))[2])
    assert status_doc["config"]["last_error"] == f"{path}: not a regular file"
    assert status_doc["config"]["watcher"]["state"] == "running"
    path.unlink()
    path.write_text(GatewayConfig(services=[service("one", up.endpoint())]).seal().to_json())
    await poll(lambda: gw.state.runtime is not None, "config applied once the file is a file")
    assert (await gw.get("/api/v1/one/x"))[0] == 200
