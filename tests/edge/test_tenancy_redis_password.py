"""The Redis password reaches a real Redis from the environment or a file
(the chart's credentials.redisPassword), never from the URL in values: with
it the limiter runs on Redis, with a wrong one the gateway falls back and says
so."""

from __future__ import annotations

import secrets
from typing import Any

import pytest
import redis

from tests.harness.app_fixtures import service
from tests.harness.redis_server import RedisServer
from vocelio_contract.config import GatewayConfig, RateTier, TierMatch

TIERS = [RateTier(name="anonymous", requests=100, window_s=60, key_by="ip", match=TierMatch(kind="anonymous"))]


def protect(server: RedisServer) -> str:
    password = secrets.token_hex(16)
    client = redis.Redis.from_url(server.url)
    client.config_set("requirepass", password)
    client.close()
    return password


@pytest.mark.redis
@pytest.mark.parametrize("right", [True, False])
async def test_the_limiter_authenticates_to_redis_with_the_password_from_the_secret(
        upstream_factory: Any, gateway_factory: Any, redis_server: RedisServer, tmp_path: Any, right: bool) -> None:
    password = protect(redis_server)
    path = tmp_path / "password"
    path.write_text((password if right else "wrong") + "\n")
    up = await upstream_factory()
    gw = await gateway_factory(GatewayConfig(services=[service("svc", up.endpoint())], rate_tiers=TIERS),
                               redis_url=redis_server.url, redis_password_file=path,
                               rate_limit={"retry_redis_after_s": 5, "redis_timeout_s": 0.5})
    assert (await gw.get("/api/v1/svc/x"))[0] == 200
    metrics = (await gw.get("/metrics"))[2].decode()
    if right:
        assert "vocelio_ratelimit_fallback_active 0.0" in metrics
        client = redis.Redis.from_url(redis_server.url, password=password)
        assert client.dbsize() > 0  # the window lives in Redis
        client.close()
    else:
        assert "vocelio_ratelimit_fallback_active 1.0" in metrics
    assert password not in metrics
