"""A hostile h2c upstream (tests/harness/hostile_h2.py) cannot exhaust the gateway:
huge header blocks and CONTINUATION floods cost one connection and a 502
(UNAVAILABLE to gRPC clients); an endless response is held back by flow control
(bounded bytes, whatever the upstream wants to push) and ends with the call's
deadline; a window that never opens and an upstream that never answers end at
the route's deadline; a PING flood from an upstream that never reads costs it
its connection once the ACKs it leaves unread pass the bound. Every case leaves no upstream stream, no in-flight count
and no open upstream connection behind."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import pytest

from tests.harness import hostile_h2
from tests.harness.app_fixtures import Gateway, GatewayFactory, poll, service
from tests.harness.grpc_backend import method
from vocelio_contract.config import Endpoint, GatewayConfig, HealthCheck, Retry, Timeouts
from vocelio_proxy.lifecycle import appkeys as keys
from vocelio_proxy.settings import Http2Settings

#: The hostile h2c upstream factory fixture (tests/harness/hostile_h2.py).
hostile = hostile_h2.hostile


async def gateway_for(make: GatewayFactory, port: int, max_header_list_bytes: int = 65_536,
                      **timeouts: float) -> Gateway:
    svc = service("echo", Endpoint(address="127.0.0.1", port=port), prefixes=["/test.Echo"], rewrite=None,
                  upstream_protocol="h2c", health_check=HealthCheck(enabled=False), retry=Retry(attempts=1),
                  timeouts=Timeouts(**timeouts))
    return await make(GatewayConfig(services=[svc]), http2=Http2Settings(cleartext=True),
                      h2c_upstream={"max_header_list_bytes": max_header_list_bytes})


async def clean(gw: Gateway) -> None:
    svc = gw.state.runtime.services["default/echo"]  # type: ignore[union-attr]
    pool = gw.app[keys.H2C_POOL]
    await poll(lambda: pool.stream_count() == 0, "no upstream stream open")
    await poll(lambda: all(ep.in_flight == 0 for ep in svc.balancer.endpoints()), "no request in flight")


def unary_code(gw: Gateway, timeout: float | None = None, payload: bytes = b"x") -> tuple[grpc.StatusCode, float]:
    with grpc.insecure_channel(f"127.0.0.1:{gw.port}") as channel:
        started = time.monotonic()
        try:
            method(channel, "unary_unary", "Unary")(payload, timeout=timeout)
        except grpc.RpcError as exc:
            return exc.code(), time.monotonic() - started
    return grpc.StatusCode.OK, time.monotonic() - started


@pytest.mark.parametrize("behaviour", ["huge-headers", "continuation-flood"])
async def test_a_hostile_header_block_costs_the_upstream_its_connection_and_the_client_gets_unavailable(
        gateway_factory: GatewayFactory, hostile: Any, behaviour: str) -> None:
    upstream = await hostile(behaviour)
    gw = await gateway_for(gateway_factory, upstream.port, max_header_list_bytes=16_384, request_s=5.0)
    code, took = await asyncio.to_thread(unary_code, gw, 10)
    assert code == grpc.StatusCode.UNAVAILABLE
    assert took < 3
    await poll(lambda: upstream.seen.closed >= 1, "the gateway hung up on the upstream")
    assert gw.app[keys.H2C_POOL].connection_count() == 0
    await clean(gw)


async def test_an_endless_response_is_held_back_by_flow_control_and_ends_with_the_calls_deadline(
        gateway_factory: GatewayFactory, hostile: Any) -> None:
    upstream = await hostile("endless-stream")
    gw = await gateway_for(gateway_factory, upstream.port, request_s=60.0, idle_s=60.0)
    window = gw.app[keys.SETTINGS].h2c_upstream.stream_window_bytes

    def never_read() -> grpc.StatusCode:
        with grpc.insecure_channel(f"127.0.0.1:{gw.port}") as channel:
            call = method(channel, "unary_stream", "ServerStream")(b"n:1", timeout=2.0)
            time.sleep(1.5)  # the client reads nothing while the upstream pushes
            try:
                for _ in call:
                    pass
            except grpc.RpcError as exc:
                return exc.code()
        return grpc.StatusCode.OK

    reading = asyncio.ensure_future(asyncio.to_thread(never_read))
    await poll(lambda: upstream.seen.pushed > 0, "the upstream pushes")
    await asyncio.sleep(0.8)
    held = upstream.seen.pushed
    await asyncio.sleep(0.4)
    # Nothing more gets through while the client reads nothing: the upstream is held
    # back by the gateway's stream window plus what the client's own window took.
    assert upstream.seen.pushed == held
    pool = gw.app[keys.H2C_POOL]
    assert all(stream.buffered <= window for stream in pool.open_streams())
    assert held < 32 * 1024 * 1024
    assert await reading == grpc.StatusCode.DEADLINE_EXCEEDED
    await poll(lambda: upstream.seen.resets >= 1, "the upstream stream was reset")
    await clean(gw)


@pytest.mark.parametrize("behaviour", ["closed-window", "silent"])
async def test_an_upstream_that_never_takes_the_body_or_never_answers_ends_at_the_route_deadline(
        gateway_factory: GatewayFactory, hostile: Any, behaviour: str) -> None:
    upstream = await hostile(behaviour)
    gw = await gateway_for(gateway_factory, upstream.port, request_s=0.5)
    # A body larger than any window the upstream could have granted before its SETTINGS.
    code, took = await asyncio.to_thread(unary_code, gw, None, b"b" * 300_000)
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert 0.4 < took < 3
    await poll(lambda: upstream.seen.resets >= 1, "the upstream stream was reset")
    await clean(gw)


async def test_an_upstream_that_floods_pings_and_never_reads_loses_its_connection(
        gateway_factory: GatewayFactory, hostile: Any) -> None:
    upstream = await hostile("ping-flood")
    gw = await gateway_for(gateway_factory, upstream.port, request_s=30.0)
    code, took = await asyncio.to_thread(unary_code, gw, 30)
    # The ACKs the gateway owes pile up unread: past the bound, the connection goes.
    assert code == grpc.StatusCode.UNAVAILABLE
    assert took < 20
    await clean(gw)
    assert gw.app[keys.H2C_POOL].connection_count() == 0
