"""Attack findings (helper "attack"): a client that is slow, not broken, must not be
able to switch a healthy service off. Each test asserts the correct behaviour (the
xfail marks went with the fix).

The attack: a POST whose body arrives in time for the client body timeout (it never
stalls) but finishes after the service's `timeouts.request_s`. The upstream deadline
runs while the gateway is still waiting for the client's bytes, the timeout is
recorded as an upstream failure (breaker and passive health), and a handful of such
uploads open the breaker or eject every endpoint of a healthy service."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.harness.app_fixtures import Gateway, GatewayFactory, service
from tests.harness.breakers_tools import breaker_of, open_raw
from tests.harness.hostile import RecordingUpstream, RecordingUpstreamFactory
from vocelio_contract.config import GatewayConfig
from vocelio_proxy.policy.breakers import BreakerState

DEADLINE_S = 0.4
BODY = 4
BYTE_EVERY_S = 0.2  # 4 bytes over 0.8 s: never stalled, always past the 0.4 s deadline


async def trickle_upload(gw: Gateway) -> bytes:
    """One POST whose body is sent a byte at a time, finishing after the deadline."""
    reader, writer = await open_raw(gw.port)
    try:
        writer.write(f"POST /api/v1/svc/upload HTTP/1.1\r\nHost: t\r\nContent-Length: {BODY}\r\n\r\n".encode())
        for _ in range(BODY):
            await asyncio.sleep(BYTE_EVERY_S)
            writer.write(b"a")
            await writer.drain()
        return await asyncio.wait_for(reader.read(65536), 5)
    except ConnectionError:
        return b""
    finally:
        writer.close()


async def slow_clients_then_get(gw: Gateway, clients: int) -> int:
    await asyncio.gather(*(trickle_upload(gw) for _ in range(clients)))
    status, _, _ = await gw.get("/api/v1/svc/after")
    return status


async def make(gateway_factory: GatewayFactory, up: RecordingUpstream, **kw: Any) -> Gateway:
    return await gateway_factory(GatewayConfig(services=[service(
        "svc", up.endpoint(), health_check={"enabled": False}, retry={"attempts": 1},
        timeouts={"request_s": DEADLINE_S, "connect_s": 0.3}, **kw)]))


async def test_clients_that_upload_slowly_never_open_the_breaker_of_a_healthy_service(
        recording_upstream: RecordingUpstreamFactory, gateway_factory: GatewayFactory) -> None:
    up = await recording_upstream()
    gw = await make(gateway_factory, up, circuit_breaker={"consecutive_failures": 3, "open_s": 30},
                    passive_health={"consecutive_failures": 1000})
    status = await slow_clients_then_get(gw, 3)
    assert breaker_of(gw).state is BreakerState.CLOSED
    assert status == 200


async def test_clients_that_upload_slowly_never_eject_a_healthy_endpoint(
        recording_upstream: RecordingUpstreamFactory, gateway_factory: GatewayFactory) -> None:
    up = await recording_upstream()
    gw = await make(gateway_factory, up, circuit_breaker={"enabled": False},
                    passive_health={"consecutive_failures": 3, "base_ejection_s": 30})
    assert await slow_clients_then_get(gw, 3) == 200  # holds only through the balancer's panic routing
    rt = gw.state.runtime
    assert rt is not None
    endpoints = list(rt.services["default/svc"].balancer.endpoints())
    assert [ep.ejections for ep in endpoints] == [0]
