"""Shutdown: after SIGTERM the gateway answers `/readyz` with 503 for
`shutdown_delay_s` while its listener still accepts and serves, so a load
balancer sees it leave before connections are refused; then the listener
closes. The default delay is long enough for a load balancer polling every
couple of seconds."""

from __future__ import annotations

import asyncio

from tests.harness.app_fixtures import poll, service
from tests.harness.hostile import RecordingUpstreamFactory, raw_request, status_of
from tests.harness.waiting import poll_async
from vocelio_contract.config import GatewayConfig
from vocelio_proxy.lifecycle import appkeys as keys
from vocelio_proxy.lifecycle.app import create_app, serve
from vocelio_proxy.lifecycle.sources import StaticSource
from vocelio_proxy.settings import ProxySettings


def test_the_default_shutdown_delay_outlasts_two_readiness_polls() -> None:
    # The chart's readiness probe: every 2 s, unready after 2 failures.
    assert ProxySettings().shutdown_delay_s >= 2 * 2


async def test_readyz_turns_503_while_the_listener_still_serves_then_the_listener_closes(
        recording_upstream: RecordingUpstreamFactory) -> None:
    up = await recording_upstream()
    settings = ProxySettings(host="127.0.0.1", port=0, access_log=False, drain_timeout_s=2, shutdown_delay_s=1.5)
    config = GatewayConfig(services=[service("svc", up.endpoint(), health_check={"enabled": False})])
    app = create_app(settings, StaticSource(config.seal()))
    stop = asyncio.Event()
    ports: list[int] = []
    server = asyncio.create_task(serve(app, settings, ports.append, stop))
    try:
        await poll(lambda: ports and app[keys.STATE].health_round_done, "gateway up")
        port = ports[0]
        get = b"GET %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        assert status_of(await raw_request(port, get % b"/readyz")) == 200
        loop = asyncio.get_running_loop()
        stopped_at = loop.time()
        stop.set()
        await poll(lambda: app[keys.STATE].draining, "draining")
        # Within the delay: new connections are accepted; readiness fails; traffic is served.
        assert status_of(await raw_request(port, get % b"/readyz")) == 503
        assert status_of(await raw_request(port, get % b"/api/v1/svc/x")) == 200
        assert not server.done()

        async def refused() -> bool:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                return True
            writer.close()
            return False

        await poll_async("listener closed after the delay", refused, 6.0, interval=0.05)
        assert loop.time() - stopped_at >= 1.4
        await asyncio.wait_for(server, 5)
    finally:
        stop.set()
        if not server.done():
            server.cancel()
