"""Trust settings are precise, through a real gateway and the recording
upstream: who may tell the client address (hop count, CIDRs) and the
forwarded proto/host; the trusted-hosts check with the one authority parser;
failed authentications cost the caller (429 before verification once used up);
the admin listener serves the operator endpoints while the public listener
serves only what the settings choose; CORS never pairs `*` with credentials."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest

from tests.harness.app_fixtures import GatewayFactory, service
from tests.harness.hostile import (
    RecordingUpstream,
    RecordingUpstreamFactory,
    raw_request,
    resources,
    settled,
    status_of,
)
from tests.harness.trust_tools import envelope_of, head_of, request_bytes, running_gateway
from vocelio_contract.config import GatewayConfig, RateTier, TierMatch
from vocelio_proxy.clock import ManualClock

SECRET = "trust-test-hmac-secret-of-a-decent-length"
ISSUERS = [{"issuer": "t", "algorithms": ["HS256"], "secret": SECRET}]


def token(**kw: Any) -> str:
    claims: dict[str, Any] = {"iss": "t", "sub": "u1", "exp": int(time.time()) + 300}
    claims.update(kw)
    return jwt.encode(claims, SECRET, algorithm="HS256")


def one_service(up: RecordingUpstream, **kw: Any) -> GatewayConfig:
    return GatewayConfig(services=[service("svc", up.endpoint(), health_check={"enabled": False}, **kw)])


async def forwarded(gw: Any, up: RecordingUpstream, headers: list[tuple[str, str | bytes]],
                    host: str = "gw.test") -> dict[str, list[str]]:
    answer = await raw_request(gw.port, request_bytes("/api/v1/svc/x", headers, host=host))
    assert status_of(answer) == 200, answer[:300]
    received = up.requests[-1]
    return {name: received.header(name) for name in ("X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host")}


async def test_cidr_trust_walks_forwarded_for_and_sends_one_client_address(recording_upstream: RecordingUpstreamFactory,
                                                                           gateway_factory: GatewayFactory) -> None:
    up = await recording_upstream()
    gw = await gateway_factory(one_service(up), trusted_proxies=3, trusted_proxy_cidrs=["127.0.0.0/8", "10.0.0.0/8"])
    cases = [
        ("203.0.113.7", "203.0.113.7"),
        ("6.6.6.6, 203.0.113.7, 10.1.1.1", "203.0.113.7"),  # the spoof left of the client is gone
        ("10.2.2.2, 10.1.1.1", "10.2.2.2"),
        ("not-an-ip, 10.1.1.1", "10.1.1.1"),
    ]
    for xff, client in cases:
        sent = await forwarded(gw, up, [("X-Forwarded-For", xff), ("X-Forwarded-Proto", "https"),
                                        ("X-Forwarded-Host", "Public.Example")])
        assert sent == {"X-Forwarded-For": [client], "X-Forwarded-Proto": ["https"],
                        "X-Forwarded-Host": ["public.example"]}, xff


async def test_a_peer_outside_the_cidrs_cannot_claim_an_address_proto_or_host(
        recording_upstream: RecordingUpstreamFactory, gateway_factory: GatewayFactory) -> None:
    up = await recording_upstream()
    tiers = [RateTier(name="anonymous", requests=2, window_s=60, key_by="ip", match=TierMatch(kind="anonymous"))]
    gw = await gateway_factory(GatewayConfig(services=one_service(up).services, rate_tiers=tiers),
                               trusted_proxies=2, trusted_proxy_cidrs=["10.0.0.0/8"])
    sent = await forwarded(gw, up, [("X-Forwarded-For", "203.0.113.7"), ("X-Forwarded-Proto", "https"),
                                    ("X-Forwarded-Host", "evil.example"), ("X_Forwarded_Proto", "https")])
    assert sent == {"X-Forwarded-For": ["127.0.0.1"], "X-Forwarded-Proto": ["http"], "X-Forwarded-Host": ["gw.test"]}
    # Spoofed addresses never open new rate-limit buckets: the limit of 2 holds for the peer.
    statuses = [status_of(await raw_request(gw.port, request_bytes("/api/v1/svc/x", [("X-Forwarded-For", a)])))
                for a in ("198.51.100.9", "198.51.100.10")]
    assert statuses == [200, 429]


async def test_a_hop_count_still_trusts_the_peer_and_the_hops_before_it(recording_upstream: RecordingUpstreamFactory,
                                                                        gateway_factory: GatewayFactory) -> None:
    up = await recording_upstream()
    gw = await gateway_factory(one_service(up), trusted_proxies=1)
    sent = await forwarded(gw, up, [("X-Forwarded-For", "6.6.6.6, 203.0.113.7"), ("X-Forwarded-Proto", "https")])
    assert sent == {"X-Forwarded-For": ["203.0.113.7"], "X-Forwarded-Proto": ["https"], "X-Forwarded-Host": ["gw.test"]}
    sent = await forwarded(gw, up, [("X-Forwarded-Proto", "javascript")])
    assert sent["X-Forwarded-Proto"] == ["http"]


async def test_without_trusted_proxies_forwarded_headers_mean_nothing(recording_upstream: RecordingUpstreamFactory,
                                                                      gateway_factory: GatewayFactory) -> None:
    up = await recording_upstream()
    gw = await gateway_factory(one_service(up))
    sent = await forwarded(gw, up, [("X-Forwarded-For", "203.0.113.7"), ("X-Forwarded-Proto", "https"),
                                    ("X-Forwarded-Host", "evil.example"), ("Forwarded", "for=1.2.3.4"),
                                    ("X-Real-IP", "1.2.3.4")])
    assert sent == {"X-Forwarded-For": ["127.0.0.1"], "X-Forwarded-Proto": ["http"], "X-Forwarded-Host": ["gw.test"]}
    assert not up.requests[-1].header("Forwarded")
    assert not up.requests[-1].header("X-Real-IP")


@pytest.mark.parametrize(("host", "status"), [
    ("api.vocelio.test", 200), ("API.Vocelio.TEST", 200), ("api.vocelio.test.", 200), ("api.vocelio.test:8080", 200),
    ("api.vocelio.test:", 200),
    ("api.vocelio.test:@evil.test", 400), ("evil.test@api.vocelio.test", 400), ("api.vocelio.test:80:81", 400),
    ("api.vocelio.test:http", 400), ("api.vocelio.test:99999", 400), ("api%2Evocelio.test", 400), ("", 400),
    ("api.vocelio.test/evil", 400), ("[::1]:80", 421), ("evil.test", 421), ("api.vocelio.test.evil.test", 421),
    ("vocelio.test", 421),
])
async def test_the_trusted_hosts_check_reads_the_authority_one_way(recording_upstream: RecordingUpstreamFactory,
                                                                   gateway_factory: GatewayFactory, host: str,
                                                                   status: int) -> None:
    up = await recording_upstream()
    gw = await gateway_factory(one_service(up), trusted_hosts=["api.vocelio.test"])
    answer = await raw_request(gw.port, request_bytes("/api/v1/svc/x", host=host))
    assert status_of(answer) == status, answer[:300]
    if status != 200:
        body = envelope_of(answer)
        assert body["status_code"] == status
        assert up.requests == []


async def test_failed_authentications_cost_the_caller_until_it_gets_429_before_verification(
        recording_upstream: RecordingUpstreamFactory, gateway_factory: GatewayFactory) -> None:
    up = await recording_upstream()
    clock = ManualClock()
    gw = await gateway_factory(one_service(up), clock=clock, trusted_proxies=1,
                               auth={"issuers": ISSUERS, "failure_limit": {"requests": 3, "window_s": 60}})
    before = resources(gw.app)

    async def call(credential: str | None, client: str = "203.0.113.7") -> bytes:
        headers: list[tuple[str, str | bytes]] = [("X-Forwarded-For", client)]
        if credential is not None:
            headers.append(("Authorization", f"Bearer {credential}"))
        return await raw_request(gw.port, request_bytes("/api/v1/svc/x", headers))

    for _ in range(3):
        assert status_of(await call(token(exp=1))) == 401  # expired: a verified failure
    blocked = await call(token())  # a valid token, but the address used up its failures
    assert status_of(blocked) == 429
    assert int(head_of(blocked)["retry-after"][0]) >= 1
    assert "failed authentications" in envelope_of(blocked)["message"]
    metrics = (await gw.get("/metrics"))[2].decode()
    assert 'vocelio_auth_failures_total{reason="expired"} 3.0' in metrics  # the 4th was never verified
    assert 'vocelio_ratelimit_decisions_total{result="limited",tier="auth-failures"} 1.0' in metrics
    assert status_of(await call(None)) == 200  # no credentials: not an authentication attempt
    assert status_of(await call(token(), client="198.51.100.1")) == 200  # another address is not affected
    clock.advance(61)
    assert status_of(await call(token())) == 200
    assert len(up.requests) == 3
    await settled(gw.app, before)


async def test_the_admin_listener_serves_operator_endpoints_and_the_public_one_does_not(
        recording_upstream: RecordingUpstreamFactory) -> None:
    up = await recording_upstream()
    async with running_gateway(one_service(up), admin={"port": 0}) as gw:
        assert gw.admin_port is not None
        assert gw.admin_server is not None
        assert gw.admin_server._server is not None
        assert gw.admin_server._server.sockets[0].getsockname()[0] == "127.0.0.1"
        for path in ("/health", "/livez", "/readyz"):
            assert status_of(await raw_request(gw.port, request_bytes(path))) == 200, path
        for path in ("/status", "/metrics", "/docs", "/openapi.json", "/"):
            for method in ("GET", "POST"):
                answer = await raw_request(gw.port, request_bytes(path, method=method))
                assert status_of(answer) == 404, (path, method)
                assert envelope_of(answer)["message"] == f"No service is routed at {path}"
        for path in ("/status", "/metrics", "/docs", "/openapi.json", "/health", "/readyz"):
            assert status_of(await raw_request(gw.admin_port, request_bytes(path))) == 200, path
        metrics = await raw_request(gw.admin_port, request_bytes("/metrics"))
        assert b"vocelio_requests_in_flight" in metrics
        assert status_of(await raw_request(gw.admin_port, request_bytes("/metrics", method="POST"))) == 405
        answer = await raw_request(gw.admin_port, request_bytes("/api/v1/svc/x"))
        assert status_of(answer) == 404
        assert up.requests == []
        assert status_of(await raw_request(gw.port, request_bytes("/api/v1/svc/x"))) == 200


async def test_the_public_listener_serves_the_endpoints_the_settings_choose(
        recording_upstream: RecordingUpstreamFactory) -> None:
    up = await recording_upstream()
    async with running_gateway(one_service(up), admin={
            "port": 0, "public_endpoints": ["/health", "/livez", "/readyz", "/metrics"]}) as gw:
        assert status_of(await raw_request(gw.port, request_bytes("/metrics"))) == 200
        assert status_of(await raw_request(gw.port, request_bytes("/status"))) == 404
    async with running_gateway(one_service(up)) as gw:  # no admin listener: everything public, as before
        assert gw.admin_port is None
        for path in ("/status", "/metrics", "/docs", "/"):
            assert status_of(await raw_request(gw.port, request_bytes(path))) == 200, path


async def test_cors_echoes_only_listed_origins_with_credentials(recording_upstream: RecordingUpstreamFactory,
                                                                gateway_factory: GatewayFactory) -> None:
    up = await recording_upstream()
    gw = await gateway_factory(one_service(up), cors={"allow_origins": ["https://app.example"],
                                                      "allow_credentials": True})
    answer = await raw_request(gw.port, request_bytes("/api/v1/svc/x", [("Origin", "https://app.example")]))
    head = head_of(answer)
    assert head["access-control-allow-origin"] == ["https://app.example"]
    assert head["access-control-allow-credentials"] == ["true"]
    answer = await raw_request(gw.port, request_bytes("/api/v1/svc/x", [("Origin", "https://evil.example")]))
    assert "access-control-allow-origin" not in head_of(answer)
    gw = await gateway_factory(one_service(up), cors={"allow_origins": ["*"]})
    answer = await raw_request(gw.port, request_bytes("/api/v1/svc/x", [("Origin", "https://evil.example")]))
    head = head_of(answer)
    assert head["access-control-allow-origin"] == ["*"]
    assert "access-control-allow-credentials" not in head
