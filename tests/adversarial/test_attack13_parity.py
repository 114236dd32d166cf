"""Red team, issue 13: the pipeline's policies hold the same over HTTP/2 as over
HTTP/1.1. One rate-limit bucket per client, whichever protocol each request used
(a client cannot double its budget by switching protocol); authentication refuses
the same requests; identity headers a client forges are dropped in every spelling
HTTP/2 lets it send."""

from __future__ import annotations

from tests.harness.app_fixtures import GatewayFactory, service
from tests.harness.h2_tools import H2Client
from tests.harness.hostile import RecordingUpstreamFactory, raw_request, status_of
from vocelio_contract.config import AuthPolicy, GatewayConfig, ServiceRateLimit
from vocelio_proxy.settings import Http2Settings


async def test_one_rate_limit_bucket_serves_a_client_on_http1_and_http2_alike(
        gateway_factory: GatewayFactory, recording_upstream: RecordingUpstreamFactory) -> None:
    up = await recording_upstream()
    svc = service("svc", up.endpoint(), prefixes=["/api"], rewrite=None,
                  rate_limit=ServiceRateLimit(requests=2, window_s=60))
    gw = await gateway_factory(GatewayConfig(services=[svc]), http2=Http2Settings(cleartext=True))
    first = await raw_request(gw.port, b"GET /api/1 HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n")
    assert status_of(first) == 200
    client = await H2Client.open(gw.port)
    try:
        second = await client.request("/api/2")
        third = await client.request("/api/3")
    finally:
        await client.close()
    assert second.status == 200
    assert third.status == 429
    fourth = await raw_request(gw.port, b"GET /api/4 HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n")
    assert status_of(fourth) == 429
    assert [r.target for r in up.requests if r.target.startswith("/api")] == ["/api/1", "/api/2"]


async def test_an_api_key_service_refuses_a_forged_identity_over_http2_as_over_http1(
        gateway_factory: GatewayFactory, recording_upstream: RecordingUpstreamFactory) -> None:
    up = await recording_upstream()
    svc = service("svc", up.endpoint(), prefixes=["/api"], rewrite=None, auth=AuthPolicy(mode="api-key"))
    gw = await gateway_factory(GatewayConfig(services=[svc]), http2=Http2Settings(cleartext=True))
    forged = [("x-vocelio-user", "admin"), ("x-vocelio-tenant", "other"), ("x_vocelio_user", "admin"),
              ("x-api-key", "not-a-key"), ("authorization", "Bearer not.a.jwt")]
    h1 = await raw_request(gw.port, b"GET /api/p HTTP/1.1\r\nHost: gw.test\r\n"
                           + b"".join(f"{k}: {v}\r\n".encode() for k, v in forged) + b"Connection: close\r\n\r\n")
    client = await H2Client.open(gw.port)
    try:
        h2 = await client.request("/api/p", headers=forged)
    finally:
        await client.close()
    assert status_of(h1) in (400, 401)
    assert h2.status == status_of(h1)
    assert [r.target for r in up.requests if r.target.startswith("/api")] == []
