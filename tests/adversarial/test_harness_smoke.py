"""The hostile-test harness itself: the recording upstream sees exactly what the
gateway forwarded, and the resource counters settle after plain traffic."""

from __future__ import annotations

from tests.harness.app_fixtures import GatewayFactory, service
from tests.harness.hostile import RecordingUpstreamFactory, raw_request, resources, settled, status_of
from vocelio_contract.config import GatewayConfig


async def test_the_recording_upstream_sees_the_forwarded_request(recording_upstream: RecordingUpstreamFactory,
                                                                 gateway_factory: GatewayFactory) -> None:
    up = await recording_upstream()
    gw = await gateway_factory(GatewayConfig(services=[service("svc", up.endpoint(), health_check={"enabled": False})]))
    before = resources(gw.app)
    answer = await raw_request(gw.port, b"GET /api/v1/svc/hello?x=1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert status_of(answer) == 200, (answer, up.protocol_errors, up.raw)
    assert up.paths() == ["/hello?x=1"]
    assert up.requests[0].header("x-forwarded-for") == ["127.0.0.1"]
    await settled(gw.app, before)
