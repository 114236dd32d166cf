"""Edge policies through the running gateway: authentication and authorization
answers, identity forwarding, spoofing attempts, rate limits on a real Redis
(shared between processes, surviving Redis outages), CORS, size limits and
compression."""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import brotli
import jwt
import pytest
import redis.asyncio
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.harness.app_fixtures import Gateway, GatewayFactory, UpstreamFactory, service
from tests.harness.redis_server import RedisServer
from tests.harness.waiting import poll_async
from vocelio_contract.apikeys import mint_key
from vocelio_contract.config import GatewayConfig, RateTier, TierMatch
from vocelio_proxy.clock import ManualClock
from vocelio_proxy.lifecycle import appkeys as keys
from vocelio_proxy.settings import AuthSettings, JwtIssuer

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PEM = KEY.public_key().public_bytes(serialization.Encoding.PEM,
                                    serialization.PublicFormat.SubjectPublicKeyInfo).decode()
AUTH = AuthSettings(issuers=[JwtIssuer(issuer="https://id.test", audiences=["gw"], public_keys={"k1": PEM})])
TIERS = [
    RateTier(name="anonymous", requests=3, window_s=60, key_by="ip", match=TierMatch(kind="anonymous")),
    RateTier(name="authenticated", requests=5, window_s=60, key_by="user", priority=10,
             match=TierMatch(kind="authenticated")),
]


def token(**kw: object) -> str:
    now = int(time.time())
    payload: dict[str, object] = {"iss": "https://id.test", "aud": "gw", "sub": "u1", "org_id": "acme",
                                  "roles": ["agent"], "exp": now + 300}
    payload.update(kw)
    return jwt.encode(payload, KEY, algorithm="RS256", headers={"kid": "k1"})


def bearer(**kw: object) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(**kw)}"}


async def test_protected_routes_answer_401_then_403_then_forward_identity(upstream_factory: UpstreamFactory,
                                                                          gateway_factory: GatewayFactory) -> None:
    up = await upstream_factory()
    gw = await gateway_factory(GatewayConfig(services=[
        service("billing", up.endpoint(), auth={"mode": "jwt", "roles": ["billing-admin"]}),
        service("agents", up.endpoint(), auth={"mode": "jwt"})]), auth=AUTH)
    status, headers, body = await gw.get("/api/v1/billing/invoices")
    assert status == 401
    assert json.loads(body)["status_code"] == 401
    assert "WWW-Authenticate" in headers
    status, _, body = await gw.get("/api/v1/billing/invoices", headers=bearer())
    assert status == 403
    assert "billing-admin" in json.loads(body)["message"]
    status, _, body = await gw.get("/api/v1/agents/x", headers={**bearer(), "X-Vocelio-Roles": "admin",
                                                                "X-Vocelio-Tenant": "globex"})
    sent = json.loads(body)["headers"]
    assert status == 200
    assert sent["X-Vocelio-User"] == "u1"
    assert sent["X-Vocelio-Tenant"] == "acme"
    assert sent["X-Vocelio-Roles"] == "agent"
    assert sent["X-Vocelio-Auth-Method"] == "jwt"
    assert "Authorization" in sent  # the token itself is the upstream's to use too


async def test_invalid_tokens_get_a_401_that_does_not_echo_them(upstream_factory: UpstreamFactory,
                                                                gateway_factory: GatewayFactory) -> None:
    up = await upstream_factory()
    gw = await gateway_factory(GatewayConfig(services=[service("agents", up.endpoint())]), auth=AUTH)
    expired = token(exp=int(time.time()) - 3600)
    status, _, body = await gw.get("/api/v1/agents/x", headers={"Authorization": f"Bearer {expired}"})
    assert status == 401
    assert "expired" in json.loads(body)["message"]
    assert expired.encode() not in body
    assert not up.hits


async def test_api_keys_from_a_file_authenticate_and_reload(upstream_factory: UpstreamFactory,
                                                            gateway_factory: GatewayFactory, tmp_path: Path) -> None:
    up = await upstream_factory()
    key, record = mint_key(tenant="acme", tier="premium", roles=["integrator"])
    keys_file = tmp_path / "keys.json"
    keys_file.write_text(json.dumps([record.model_dump(mode="json")]))
    gw = await gateway_factory(GatewayConfig(services=[service("dev", up.endpoint(), auth={"mode": "api-key"})]),
                               api_keys_path=keys_file)
    status, _, body = await gw.get("/api/v1/dev/x", headers={"X-API-Key": key})
    assert status == 200
    assert json.loads(body)["headers"]["X-Vocelio-Tier"] == "premium"
    assert (await gw.get("/api/v1/dev/x", headers={"X-API-Key": key[:-3] + "AAA"}))[0] == 401
    keys_file.write_text(json.dumps([record.model_copy(update={"disabled": True}).model_dump(mode="json")]))
    status, _, body = await gw.get("/api/v1/dev/x", headers={"X-API-Key": key})
    assert status == 401
    assert "disabled" in json.loads(body)["message"]


async def test_a_crafted_path_cannot_reach_a_protected_route_through_a_public_prefix(
        upstream_factory: UpstreamFactory, gateway_factory: GatewayFactory) -> None:
    up = await upstream_factory()
    gw = await gateway_factory(GatewayConfig(services=[
        service("public", up.endpoint(), prefixes=["/api/v1/public"]),
        service("admin", up.endpoint(), prefixes=["/api/v1/admin"], auth={"mode": "jwt"})]), auth=AUTH)
    for path in ("/api/v1/public/../admin/users", "/api/v1/public/%2e%2e/admin/users",
                 "//api/v1/public/./../admin/users"):
        assert (await gw.get(path))[0] == 401, path
    assert (await gw.get("/api/v1/public%2F..%2Fadmin/users"))[0] == 400
    assert not up.hits


async def test_a_spoofed_forwarded_for_does_not_move_a_caller_into_another_bucket(
        upstream_factory: UpstreamFactory, gateway_factory: GatewayFactory) -> None:
    up = await upstream_factory()
    gw = await gateway_factory(GatewayConfig(services=[service("svc", up.endpoint())], rate_tiers=TIERS))
    statuses = [(await gw.get("/api/v1/svc/x", headers={"X-Forwarded-For": f"10.9.9.{i}"}))[0] for i in range(5)]
    assert statuses == [200, 200, 200, 429, 429]


async def _get_from(gw: Gateway, address: str, path: str) -> tuple[int, dict[str, str]]:
    """A GET sent from `address` (a loopback address of its own: its own rate-limit bucket)."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(address, 0))) as session, \
            session.get(gw.url + path) as resp:
        await resp.read()
        return resp.status, dict(resp.headers)


async def test_an_anonymous_callers_limits_follow_a_reload_and_each_address_keeps_its_own_bucket(
        upstream_factory: UpstreamFactory, gateway_factory: GatewayFactory) -> None:
    """The gateway remembers anonymous callers' identities and limit checks per address:
    what it remembers is per address and per runtime, never carried past a reload."""
    up = await upstream_factory()
    gw = await gateway_factory(GatewayConfig(services=[service("svc", up.endpoint())], rate_tiers=TIERS))
    first = [await _get_from(gw, "127.0.0.2", "/api/v1/svc/x") for _ in range(4)]
    assert [status for status, _ in first] == [200, 200, 200, 429]
    assert [h["X-RateLimit-Remaining"] for _, h in first] == ["2", "1", "0", "0"]
    status, headers = await _get_from(gw, "127.0.0.3", "/api/v1/svc/x")
    assert (status, headers["X-RateLimit-Remaining"]) == (200, "2")  # another address, another bucket
    roomier = [RateTier(name="anonymous", requests=10, window_s=60, key_by="ip", match=TierMatch(kind="anonymous"))]
    assert gw.state.apply(GatewayConfig(services=[service("svc", up.endpoint())], rate_tiers=roomier).seal())
    status, headers = await _get_from(gw, "127.0.0.2", "/api/v1/svc/x")
    assert status == 200
    assert headers["X-RateLimit-Limit"] == "10"
    assert headers["RateLimit-Policy"] == '"anonymous";q=10;w=60'
    status, headers = await _get_from(gw, "127.0.0.4", "/api/v1/svc/x")
    assert (status, headers["X-RateLimit-Limit"], headers["X-RateLimit-Remaining"]) == (200, "10", "9")


async def test_callers_rotating_addresses_cannot_grow_what_the_gateway_remembers_about_anonymous_callers(
        upstream_factory: UpstreamFactory, gateway_factory: GatewayFactory) -> None:
    """Behind a trusted proxy every X-Forwarded-For address is a caller: 5,000 of them leave
    at most 4,096 remembered identities and limit checks, and limits still hold per address."""
    up = await upstream_factory()
    gw = await gateway_factory(GatewayConfig(services=[service("svc", up.endpoint())], rate_tiers=TIERS),
                               trusted_proxies=1, trusted_proxy_cidrs=["127.0.0.0/8"])
    gate = gw.app[keys.EDGE_GATE]
    limits_seen: set[str] = set()
    for i in range(5000):
        forwarded = {"X-Forwarded-For": f"10.{i >> 16}.{i >> 8 & 255}.{i & 255}"}
        status, headers, _ = await gw.get("/api/v1/svc/x", headers=forwarded)
        assert status == 200
        limits_seen.add(headers["X-RateLimit-Remaining"])
        assert len(gate._anonymous) <= 4096
        assert len(gate._anonymous_checks) <= 4096
    assert limits_seen == {"2"}  # every address its own bucket: each one's first request
    statuses = [(await gw.get("/api/v1/svc/x", headers={"X-Forwarded-For": "10.0.0.1"}))[0] for _ in range(3)]
    assert statuses == [200, 200, 429]  # its second, third and fourth: remembered or not, counted


async def test_rate_limited_responses_carry_headers_and_429_has_the_envelope(upstream_factory: UpstreamFactory,
                                                                             gateway_factory: GatewayFactory) -> None:
    up = await upstream_factory()
    gw = await gateway_factory(GatewayConfig(services=[service("svc", up.endpoint())], rate_tiers=TIERS), auth=AUTH)
    status, headers, _ = await gw.get("/api/v1/svc/x")
    assert status == 200
    assert headers["X-RateLimit-Limit"] == "3"
    assert headers["X-RateLimit-Remaining"] == "2"
    assert int(headers["X-RateLimit-Reset"]) > time.time()
    assert headers["RateLimit-Policy"] == '"anonymous";q=3;w=60'
    assert headers["RateLimit"].startswith('"anonymous";r=2;t=')
    for _ in range(2):
        await gw.get("/api/v1/svc/x")
    status, headers, body = await gw.get("/api/v1/svc/x")
    data = json.loads(body)
    assert status == 429
    assert data["status_code"] == 429
    assert data["retry_after"] >= 1
    assert int(headers["Retry-After"]) >= 1
    assert headers["X-RateLimit-Remaining"] == "0"
    # An authenticated caller is in another tier and bucket.
    status, headers, _ = await gw.get("/api/v1/svc/x", headers=bearer())
    assert status == 200
    assert headers["X-RateLimit-Limit"] == "5"


@pytest.mark.redis
@pytest.mark.parametrize("mode", ["exact", "lease"])
async def test_two_gateway_processes_sharing_redis_admit_no_more_than_the_limit(upstream_factory: UpstreamFactory,
                                                                                tmp_path: Path,
                                                                                redis_server: RedisServer,
                                                                                mode: str) -> None:
    import os
    import signal
    import subprocess
    import sys

    import aiohttp

    from tests.harness.controlplane import free_port

    up = await upstream_factory()
    tiers = [RateTier(name="anonymous", requests=50, window_s=60, key_by="ip", match=TierMatch(kind="anonymous"))]
    config_file = tmp_path / "gateway.json"
    config_file.write_text(GatewayConfig(services=[service("svc", up.endpoint())], rate_tiers=tiers).seal().to_json())
    (tmp_path / "settings.yaml").write_text(f"redis_url: {redis_server.url}\naccess_log: false\n"
                                            f"rate_limit: {{mode: {mode}}}\n")
    ports = [free_port(), free_port()]
    procs = [await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "vocelio-proxy"), "serve", "--config", str(config_file), "--settings",
        str(tmp_path / "settings.yaml"), "--host", "127.0.0.1", "--port", str(port),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True) for port in ports]
    try:
        async with aiohttp.ClientSession() as session:
            async def ready(port: int) -> bool:
                try:
                    async with session.get(f"http://127.0.0.1:{port}/readyz") as resp:
                        return resp.status == 200
                except aiohttp.ClientError:
                    return False

            async def both_ready() -> bool:
                return all([await ready(p) for p in ports])

            await poll_async("both gateways ready", both_ready, 20)

            async def hit(i: int) -> int:
                async with session.get(f"http://127.0.0.1:{ports[i % 2]}/api/v1/svc/x") as resp:
                    return resp.status

            statuses = await asyncio.gather(*(hit(i) for i in range(120)))
        if mode == "exact":
            assert statuses.count(200) == 50
        else:
            # Never more; fewer by at most the units each process leased ahead and did not
            # spend (a limit of 50 leases one unit at a time: at most one per process).
            assert 50 - 2 <= statuses.count(200) <= 50
        assert statuses.count(429) == 120 - statuses.count(200)
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 15)


@pytest.mark.redis
@pytest.mark.parametrize("mode", ["exact", "lease"])
async def test_redis_outage_fails_open_to_the_local_limiter_and_recovers(upstream_factory: UpstreamFactory,
                                                                         gateway_factory: GatewayFactory,
                                                                         redis_server: RedisServer,
                                                                         mode: str) -> None:
    up = await upstream_factory()
    tiers = [RateTier(name="anonymous", requests=10, window_s=60, key_by="ip", match=TierMatch(kind="anonymous"))]
    gw = await gateway_factory(GatewayConfig(services=[service("svc", up.endpoint())], rate_tiers=tiers),
                               redis_url=redis_server.url,
                               rate_limit={"retry_redis_after_s": 0.2, "redis_timeout_s": 0.2, "mode": mode})
    assert [(await gw.get("/api/v1/svc/x"))[0] for _ in range(4)] == [200] * 4
    redis_server.kill()
    during = [(await gw.get("/api/v1/svc/x"))[0] for _ in range(13)]
    # The local limiter enforces the same tier. A lease held at the kill (at most one unit
    # for a limit of 10, already counted in Redis) is spent first; whether the background
    # refill had brought it in before the kill is timing, so both outcomes are allowed.
    outcomes = [[200] * (10 + held) + [429] * (3 - held) for held in ((0, 1) if mode == "lease" else (0,))]
    assert during in outcomes
    metrics = (await gw.get("/metrics"))[2].decode()
    assert "vocelio_ratelimit_fallback_active 1.0" in metrics
    assert "vocelio_ratelimit_backend_errors_total" in metrics
    redis_server.start()

    async def back() -> bool:
        await gw.get("/api/v1/svc/x")
        return "vocelio_ratelimit_fallback_active 0.0" in (await gw.get("/metrics"))[2].decode()

    assert await poll_async("limiter back on Redis", back, 10)
    # Redis restarted empty: its counts start again from the requests made since.
    status, headers, _ = await gw.get("/api/v1/svc/x")
    assert status == 200
    assert int(headers["X-RateLimit-Remaining"]) >= 7


async def _counted(redis_server: RedisServer, units: int = 2) -> bool:
    """Redis's window counters add up to `units`."""
    store = redis.asyncio.Redis.from_url(redis_server.url)
    try:
        counters = [key for key in await store.keys("*") if await store.type(key) == b"string"]
        values = await store.mget(counters) if counters else []
        return sum(int(value) for value in values if value is not None) == units
    finally:
        await store.aclose()


@pytest.mark.redis
@pytest.mark.parametrize("mode", ["exact", "lease"])
async def test_redis_outage_fails_closed_when_configured(upstream_factory: UpstreamFactory,
                                                         gateway_factory: GatewayFactory,
                                                         redis_server: RedisServer, mode: str) -> None:
    up = await upstream_factory()
    gw = await gateway_factory(GatewayConfig(services=[service("svc", up.endpoint())], rate_tiers=TIERS),
                               redis_url=redis_server.url,
                               rate_limit={"fail_mode": "closed", "retry_redis_after_s": 0.2, "redis_timeout_s": 0.2,
                                           "mode": mode})
    assert (await gw.get("/api/v1/svc/x"))[0] == 200
    if mode == "lease":
        # The first request spent its unit and leased the next one ahead (limit 3: one at a
        # time) in the background: Redis counts both once the lease has arrived.
        assert await poll_async("the unit leased ahead is counted in Redis", lambda: _counted(redis_server), 5)
    redis_server.kill()
    if mode == "lease":
        # The unit leased ahead is already counted in Redis: it is spent.
        assert (await gw.get("/api/v1/svc/x"))[0] == 200
    status, headers, body = await gw.get("/api/v1/svc/x")
    assert status == 503
    assert "Retry-After" in headers
    assert json.loads(body)["status_code"] == 503
    hits = len(up.hits)
    redis_server.start()

    async def admitted() -> bool:
        return (await gw.get("/api/v1/svc/x"))[0] == 200

    assert await poll_async("requests admitted again", admitted, 10)
    assert len(up.hits) == hits + 1


async def test_unknown_hosts_are_refused_when_trusted_hosts_are_set(upstream_factory: UpstreamFactory,
                                                                    gateway_factory: GatewayFactory) -> None:
    up = await upstream_factory()
    gw = await gateway_factory(GatewayConfig(services=[service("svc", up.endpoint())]),
                               trusted_hosts=["api.vocelio.test"])
    status, _, body = await gw.get("/api/v1/svc/x", headers={"Host": "evil.test"})
    assert status == 421
    assert json.loads(body)["status_code"] == 421
    assert not up.hits
    status, _, _ = await gw.get("/api/v1/svc/x", headers={"Host": "api.vocelio.test:8080"})
    assert status == 200


async def test_cors_preflight_is_answered_at_the_gateway(upstream_factory: UpstreamFactory,
                                                         gateway_factory: GatewayFactory) -> None:
    up = await upstream_factory()
    gw = await gateway_factory(GatewayConfig(services=[service("svc", up.endpoint())]),
                               cors={"allow_origins": ["https://app.vocelio.ai"]})
    status, headers, _ = await gw.request("OPTIONS", "/api/v1/svc/x", headers={
        "Origin": "https://app.vocelio.ai", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "Authorization, Content-Type"})
    assert status == 204
    assert headers["Access-Control-Allow-Origin"] == "https://app.vocelio.ai"
    assert not up.hits
    status, _, _ = await gw.request("OPTIONS", "/api/v1/svc/x", headers={
        "Origin": "https://evil.test", "Access-Control-Request-Method": "POST"})
    assert status == 403
    status, headers, _ = await gw.get("/api/v1/svc/x", headers={"Origin": "https://app.vocelio.ai"})
    assert headers["Access-Control-Allow-Origin"] == "https://app.vocelio.ai"
    assert "X-RateLimit-Remaining" in headers["Access-Control-Expose-Headers"]


async def test_bodies_over_the_limit_get_413_even_when_streamed(upstream_factory: UpstreamFactory,
                                                                gateway_factory: GatewayFactory) -> None:
    up = await upstream_factory()
    gw = await gateway_factory(GatewayConfig(services=[service("svc", up.endpoint(), max_body_bytes=1000)]))
    status, _, body = await gw.request("POST", "/api/v1/svc/x", data=b"x" * 2000)
    assert status == 413
    assert json.loads(body)["status_code"] == 413

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"y" * 300

    status, _, body = await gw.request("POST", "/api/v1/svc/x", data=chunks())
    assert status == 413


async def test_oversized_urls_and_headers_get_the_envelope(upstream_factory: UpstreamFactory,
                                                           gateway_factory: GatewayFactory) -> None:
    up = await upstream_factory()
    gw = await gateway_factory(GatewayConfig(services=[service("svc", up.endpoint())]),
                               limits={"max_url_bytes": 300, "max_headers": 20})
    status, _, body = await gw.get("/api/v1/svc/" + "a" * 400)
    assert status == 414
    assert json.loads(body)["status_code"] == 414
    status, _, _ = await gw.get("/api/v1/svc/x", headers={f"X-H{i}": "v" for i in range(30)})
    assert status == 431


async def test_compressible_responses_are_compressed_for_clients_that_ask(upstream_factory: UpstreamFactory,
                                                                          gateway_factory: GatewayFactory) -> None:
    payload = {"items": list(range(2000))}

    async def big_json(request: web.Request) -> web.StreamResponse:
        return web.json_response(payload)

    up = await upstream_factory(big_json)
    gw = await gateway_factory(GatewayConfig(services=[service("svc", up.endpoint())]))
    import aiohttp

    gw.session = aiohttp.ClientSession(auto_decompress=False)
    status, headers, body = await gw.get("/api/v1/svc/x", headers={"Accept-Encoding": "gzip, br"})
    assert status == 200
    assert headers["Content-Encoding"] == "br"
    assert json.loads(brotli.decompress(body)) == payload
    status, headers, body = await gw.get("/api/v1/svc/x", headers={"Accept-Encoding": "gzip"})
    assert headers["Content-Encoding"] == "gzip"
    assert json.loads(gzip.decompress(body)) == payload
    status, headers, body = await gw.get("/api/v1/svc/x", headers={"Accept-Encoding": "identity"})
    await gw.session.close()
    assert "Content-Encoding" not in headers
    assert json.loads(body) == payload


async def test_jwks_rotation_fetches_a_new_kid_and_keeps_the_old_key(upstream_factory: UpstreamFactory,
                                                                     gateway_factory: GatewayFactory) -> None:
    from jwt.algorithms import RSAAlgorithm

    old_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    new_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    published = {"keys": [dict(json.loads(RSAAlgorithm.to_jwk(old_key.public_key())), kid="old")]}
    fetches: list[int] = []

    async def jwks(request: web.Request) -> web.StreamResponse:
        fetches.append(1)
        return web.json_response(published)

    idp = await upstream_factory(jwks)
    up = await upstream_factory()
    auth = AuthSettings(issuers=[JwtIssuer(issuer="https://idp.test", jwks_url=f"http://127.0.0.1:{idp.port}/jwks")],
                        jwks_refresh_min_interval_s=1)
    clock = ManualClock()
    gw = await gateway_factory(GatewayConfig(services=[service("svc", up.endpoint(), auth={"mode": "jwt"})]),
                               auth=auth, clock=clock)

    def signed(key: rsa.RSAPrivateKey, kid: str) -> dict[str, str]:
        claims = {"iss": "https://idp.test", "sub": "u1", "exp": int(time.time()) + 60}
        return {"Authorization": "Bearer " + jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})}

    assert (await gw.get("/api/v1/svc/x", headers=signed(old_key, "old")))[0] == 200
    assert len(fetches) == 1
    # The issuer rotates: a token with an unknown kid triggers one refetch.
    published["keys"].append(dict(json.loads(RSAAlgorithm.to_jwk(new_key.public_key())), kid="new"))
    clock.advance(1.1)  # past the refetch interval (1 s here)
    assert (await gw.get("/api/v1/svc/x", headers=signed(new_key, "new")))[0] == 200
    assert len(fetches) == 2
    published["keys"] = published["keys"][1:]  # old key withdrawn from the document, still cached
    assert (await gw.get("/api/v1/svc/x", headers=signed(old_key, "old")))[0] == 200
    # Forged kids cannot hammer the issuer: refetches are bounded by the interval.
    for i in range(5):
        assert (await gw.get("/api/v1/svc/x", headers=signed(new_key, f"forged-{i}")))[0] == 401
    assert len(fetches) <= 3
