"""gRPC through the gateway, end to end: a real `grpcio` client speaking h2c with
prior knowledge to the gateway, which forwards over h2c to a real `grpcio`
server (tests/harness/grpc_backend.py). Every RPC kind, trailers intact, the
gateway's own errors as gRPC status codes, deadlines, a backend killed
mid-stream, a client cancelling mid-stream, and many concurrent streams on a
bounded number of upstream connections."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import unquote

import grpc
import pytest

from tests.harness import hostile_h2
from tests.harness.app_fixtures import Gateway, GatewayFactory, poll, service
from tests.harness.grpc_backend import BackendProcess, GrpcBackend, method
from tests.harness.h2_tools import H2Client
from vocelio_contract.config import (
    AuthPolicy,
    CircuitBreaker,
    Endpoint,
    GatewayConfig,
    HealthCheck,
    PassiveHealth,
    Retry,
    ServiceRateLimit,
    Timeouts,
)
from vocelio_proxy.lifecycle import appkeys as keys
from vocelio_proxy.lifecycle.healthchecks import GRPC_HEALTH_CHECK
from vocelio_proxy.settings import Http2Settings

#: The hostile h2c upstream factory fixture (tests/harness/hostile_h2.py).
hostile = hostile_h2.hostile


@pytest.fixture
def backend() -> Iterator[GrpcBackend]:
    server = GrpcBackend().start()
    yield server
    server.stop()


def grpc_service(port: int, **kw: Any) -> Any:
    kw.setdefault("health_check", HealthCheck(enabled=False))
    return service("echo", Endpoint(address="127.0.0.1", port=port), prefixes=["/test.Echo"], rewrite=None,
                   upstream_protocol="h2c", **kw)


async def grpc_gateway(make: GatewayFactory, port: int, **kw: Any) -> Gateway:
    return await make(GatewayConfig(services=[grpc_service(port, **kw)]), http2=Http2Settings(cleartext=True))


@pytest.fixture
async def channel_factory() -> AsyncIterator[Any]:
    channels: list[grpc.Channel] = []

    def make(gw: Gateway) -> grpc.Channel:
        channel = grpc.insecure_channel(f"127.0.0.1:{gw.port}")
        channels.append(channel)
        return channel

    yield make
    for channel in channels:
        channel.close()


def run(fn: Any, *args: Any, **kw: Any) -> Any:
    """A blocking grpcio call off the event loop (the gateway runs on it)."""
    return asyncio.to_thread(fn, *args, **kw)


def trailers(call: Any) -> dict[str, str]:
    return {k: v for k, v in call.trailing_metadata() or ()}


async def test_a_unary_call_passes_through_with_its_metadata_and_trailers(
        gateway_factory: GatewayFactory, backend: GrpcBackend, channel_factory: Any) -> None:
    gw = await grpc_gateway(gateway_factory, backend.port)
    unary = method(channel_factory(gw), "unary_unary", "Unary")
    reply, call = await run(unary.with_call, b"hello", metadata=(("x-caller", "test"),), timeout=5)
    assert reply == b"hello"
    assert call.code() == grpc.StatusCode.OK
    assert dict(call.initial_metadata())["x-initial"] == "yes"
    assert trailers(call)["x-trailer"] == "done"
    seen = backend.record.metadata[-1]
    assert seen["x-caller"] == "test"
    assert "x-request-id" in seen


async def test_an_upstream_status_and_message_reach_the_client(
        gateway_factory: GatewayFactory, backend: GrpcBackend, channel_factory: Any) -> None:
    gw = await grpc_gateway(gateway_factory, backend.port)
    unary = method(channel_factory(gw), "unary_unary", "Unary")
    with pytest.raises(grpc.RpcError) as caught:
        await run(unary, b"fail:na\xc3\xafve input 100%", timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == "naïve input 100%"
    assert trailers(caught.value)["x-trailer"] == "done"


async def test_server_streaming_client_streaming_and_bidirectional_calls_pass_through(
        gateway_factory: GatewayFactory, backend: GrpcBackend, channel_factory: Any) -> None:
    gw = await grpc_gateway(gateway_factory, backend.port)
    channel = channel_factory(gw)
    stream = method(channel, "unary_stream", "ServerStream")
    got = await run(lambda: list(stream(b"n:50", timeout=5)))
    assert got == [b"msg-%d" % i for i in range(50)]
    client_stream = method(channel, "stream_unary", "ClientStream")
    joined = await run(client_stream, iter([b"a", b"b" * 100_000, b"c"]), timeout=5)
    assert joined == b"a|" + b"b" * 100_000 + b"|c"

    def bidi() -> list[bytes]:
        # Each answer is read before the next message is sent: the gateway must not
        # wait for the whole request stream before forwarding.
        outbox: list[bytes] = []
        ready = threading.Event()
        answers = []
        done = threading.Event()

        def requests() -> Iterator[bytes]:
            for i in range(5):
                yield b"m%d" % i
                ready.wait(5)
                ready.clear()
            done.wait(5)

        call = method(channel, "stream_stream", "Bidi")(requests(), timeout=10)
        for answer in call:
            answers.append(answer)
            ready.set()
            if len(answers) == 5:
                done.set()
        outbox.extend(answers)
        return outbox

    assert await run(bidi) == [b"echo:m%d" % i for i in range(5)]


async def test_gateway_errors_reach_grpc_clients_as_grpc_status_codes(
        gateway_factory: GatewayFactory, backend: GrpcBackend, channel_factory: Any) -> None:
    protected = await grpc_gateway(gateway_factory, backend.port, auth=AuthPolicy(mode="api-key"))
    unary = method(channel_factory(protected), "unary_unary", "Unary")
    with pytest.raises(grpc.RpcError) as caught:
        await run(unary, b"x", timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED

    limited = await grpc_gateway(gateway_factory, backend.port,
                                 rate_limit=ServiceRateLimit(requests=1, window_s=60))
    unary = method(channel_factory(limited), "unary_unary", "Unary")
    assert await run(unary, b"first", timeout=5) == b"first"
    with pytest.raises(grpc.RpcError) as caught:
        await run(unary, b"second", timeout=5)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

    # A method of a service no route serves.
    unrouted = channel_factory(limited).unary_unary("/other.Service/Call", request_serializer=bytes,
                                                    response_deserializer=bytes)
    with pytest.raises(grpc.RpcError) as caught:
        await run(unrouted, b"x", timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "No service is routed" in caught.value.details()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_backend_that_is_down_is_unavailable_and_counts_against_the_endpoint(
        gateway_factory: GatewayFactory, channel_factory: Any) -> None:
    gw = await grpc_gateway(gateway_factory, closed_port(), passive_health=PassiveHealth(consecutive_failures=2),
                            retry=Retry(attempts=1))
    unary = method(channel_factory(gw), "unary_unary", "Unary")
    for _ in range(2):
        with pytest.raises(grpc.RpcError) as caught:
            await run(unary, b"x", timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    ep = next(iter(gw.state.runtime.services["default/echo"].balancer.endpoints()))  # type: ignore[union-attr]
    # Passive health saw two connect failures, like two HTTP/1.1 ones: the endpoint is ejected.
    assert ep.ejections == 1


async def test_a_failed_connect_is_retried_on_another_endpoint(
        gateway_factory: GatewayFactory, backend: GrpcBackend, channel_factory: Any) -> None:
    svc = service("echo", Endpoint(address="127.0.0.1", port=closed_port()),
                  Endpoint(address="127.0.0.1", port=backend.port), prefixes=["/test.Echo"], rewrite=None,
                  upstream_protocol="h2c", health_check=HealthCheck(enabled=False))
    gw = await gateway_factory(GatewayConfig(services=[svc]), http2=Http2Settings(cleartext=True))
    unary = method(channel_factory(gw), "unary_unary", "Unary")
    # Round-robin starts on either endpoint: two calls meet the closed one at least once.
    assert [await run(unary, b"a%d" % i, timeout=5) for i in range(2)] == [b"a0", b"a1"]


async def test_an_http1_client_reaches_an_h2c_service(gateway_factory: GatewayFactory, hostile: Any) -> None:
    upstream = await hostile("plain-503")
    gw = await grpc_gateway(gateway_factory, upstream.port)
    status, headers, body = await gw.request("POST", "/test.Echo/Unary", data=b"{}")
    assert status == 503
    assert body == b"upstream busy"
    assert headers["Content-Type"] == "text/plain"


async def test_a_route_timeout_is_deadline_exceeded_and_grpc_timeout_is_capped_by_it(
        gateway_factory: GatewayFactory, backend: GrpcBackend, channel_factory: Any) -> None:
    gw = await grpc_gateway(gateway_factory, backend.port, timeouts=Timeouts(request_s=0.3))
    unary = method(channel_factory(gw), "unary_unary", "Unary")
    with pytest.raises(grpc.RpcError) as caught:
        await run(unary, b"sleep:3")  # no client deadline: the gateway's is the only one
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # A client deadline longer than the route's is cut to the route's on the way upstream.
    await run(unary, b"quick", timeout=30)
    left = backend.record.deadlines[-1]
    assert left is not None
    assert left <= 0.3


async def test_a_backend_killed_mid_stream_ends_the_call_unavailable_and_counters_return_to_zero(
        gateway_factory: GatewayFactory, channel_factory: Any) -> None:
    proc = await run(BackendProcess)
    try:
        gw = await grpc_gateway(gateway_factory, proc.port)
        stream = method(channel_factory(gw), "unary_stream", "ServerStream")
        call = stream(b"forever", timeout=10)
        first = await run(next, call)
        assert first.startswith(b"tick-")
        await run(proc.kill)
        with pytest.raises(grpc.RpcError) as caught:
            await run(lambda: list(call))
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        await settled(gw)
    finally:
        proc.kill()


async def settled(gw: Gateway) -> None:
    svc = gw.state.runtime.services["default/echo"]  # type: ignore[union-attr]
    pool = gw.app[keys.H2C_POOL]
    await poll(lambda: all(ep.in_flight == 0 for ep in svc.balancer.endpoints()), "no request in flight")
    await poll(lambda: pool.stream_count() == 0, "no upstream stream open")
    await poll(lambda: svc.breaker.probes_in_flight == 0, "no breaker probe slot held")


async def test_a_client_cancelling_mid_stream_cancels_the_upstream_call(
        gateway_factory: GatewayFactory, backend: GrpcBackend, channel_factory: Any) -> None:
    gw = await grpc_gateway(gateway_factory, backend.port)
    stream = method(channel_factory(gw), "unary_stream", "ServerStream")
    call = stream(b"forever", timeout=30)
    assert (await run(next, call)).startswith(b"tick-")
    call.cancel()
    await poll(lambda: backend.stream_cancelled.is_set(), "the backend saw the cancel")
    await settled(gw)


async def test_many_concurrent_calls_share_a_bounded_number_of_upstream_connections(
        gateway_factory: GatewayFactory, backend: GrpcBackend, channel_factory: Any) -> None:
    gw = await gateway_factory(GatewayConfig(services=[grpc_service(backend.port)]),
                               http2=Http2Settings(cleartext=True),
                               h2c_upstream={"connections_per_endpoint": 2, "streams_per_connection": 4})
    unary = method(channel_factory(gw), "unary_unary", "Unary")
    replies = await asyncio.gather(*[run(unary, b"sleep:0.05", timeout=20) for _ in range(30)])
    assert replies == [b"sleep:0.05"] * 30
    assert gw.app[keys.H2C_POOL].created <= 2
    await settled(gw)


async def test_endpoints_of_an_h2c_service_are_checked_with_the_grpc_health_protocol(
        gateway_factory: GatewayFactory, backend: GrpcBackend) -> None:
    gw = await grpc_gateway(gateway_factory, backend.port,
                            health_check=HealthCheck(path=GRPC_HEALTH_CHECK, interval_s=0.1, timeout_s=0.1,
                                                     healthy_threshold=1, unhealthy_threshold=1))
    ep = next(iter(gw.state.runtime.services["default/echo"].balancer.endpoints()))  # type: ignore[union-attr]
    assert ep.active_healthy
    backend.serving = False
    await poll(lambda: not ep.active_healthy, "the endpoint is out once it is not SERVING")
    backend.serving = True
    await poll(lambda: ep.active_healthy, "the endpoint is back once it is SERVING")


async def test_a_gateway_error_is_one_trailers_only_headers_frame_and_never_the_json_envelope(
        gateway_factory: GatewayFactory, backend: GrpcBackend) -> None:
    gw = await grpc_gateway(gateway_factory, backend.port, auth=AuthPolicy(mode="api-key"))
    client = await H2Client.open(gw.port)
    try:
        grpc_fields = [("content-type", "application/grpc+proto"), ("te", "trailers")]
        answer = await client.request("/test.Echo/Unary", "POST", grpc_fields, b"\x00\x00\x00\x00\x01x")
        assert answer.status == 200
        assert answer.body == b""
        assert answer.trailers == []  # Trailers-Only: the status is in the one HEADERS frame
        fields = dict(answer.headers)
        assert fields["content-type"] == "application/grpc"
        assert fields["grpc-status"] == "16"
        assert "Authentication" in unquote(fields["grpc-message"])
        assert fields["x-request-id"]
        # Counted as the refusal it is, not as the 200 on the wire.
        _, _, metrics = await gw.get("/metrics")
        assert 'vocelio_requests_total{code="401",code_class="4xx",method="POST",service="echo"} 1.0' in \
            metrics.decode()
        # The same refusal to a JSON client is the envelope.
        plain = await client.request("/test.Echo/Unary", "POST", [("content-type", "application/json")], b"{}")
        assert plain.status == 401
        assert plain.body.startswith(b"{")
    finally:
        await client.close()


async def test_a_malformed_grpc_timeout_is_refused_as_internal_and_never_reaches_the_backend(
        gateway_factory: GatewayFactory, backend: GrpcBackend) -> None:
    gw = await grpc_gateway(gateway_factory, backend.port)
    client = await H2Client.open(gw.port)
    try:
        for bad in ("1.5S", "123456789m", "10x", "-1S"):
            answer = await client.request("/test.Echo/Unary", "POST", [
                ("content-type", "application/grpc"), ("te", "trailers"), ("grpc-timeout", bad)],
                b"\x00\x00\x00\x00\x01x")
            assert dict(answer.headers)["grpc-status"] == "13", bad
        assert backend.record.metadata == []
    finally:
        await client.close()


async def test_an_upstream_answer_without_grpc_status_gets_the_status_of_its_http_status(
        gateway_factory: GatewayFactory, hostile: Any) -> None:
    upstream = await hostile("plain-503")
    gw = await grpc_gateway(gateway_factory, upstream.port)
    client = await H2Client.open(gw.port)
    try:
        answer = await client.request("/test.Echo/Unary", "POST", [
            ("content-type", "application/grpc"), ("te", "trailers")], b"\x00\x00\x00\x00\x01x")
        fields = dict(answer.headers + answer.trailers)
        assert fields["grpc-status"] == "14"
        assert "503" in fields["grpc-message"]
    finally:
        await client.close()


async def test_an_open_breaker_is_unavailable_with_a_retry_pushback(gateway_factory: GatewayFactory) -> None:
    gw = await grpc_gateway(gateway_factory, closed_port(), retry=Retry(attempts=1),
                            circuit_breaker=CircuitBreaker(consecutive_failures=1, half_open_max_probes=1))
    client = await H2Client.open(gw.port)
    try:
        call = [("content-type", "application/grpc"), ("te", "trailers")]
        first = dict((await client.request("/test.Echo/Unary", "POST", call, b"\x00\x00\x00\x00\x01x")).headers)
        assert first["grpc-status"] == "14"
        assert "could not be reached" in unquote(first["grpc-message"])
        second = dict((await client.request("/test.Echo/Unary", "POST", call, b"\x00\x00\x00\x00\x01x")).headers)
        assert second["grpc-status"] == "14"
        assert "circuit breaker open" in unquote(second["grpc-message"])
        assert int(second["grpc-retry-pushback-ms"]) > 0
    finally:
        await client.close()


async def test_a_client_stream_over_the_body_limit_is_resource_exhausted_and_cancelled_upstream(
        gateway_factory: GatewayFactory, backend: GrpcBackend, channel_factory: Any) -> None:
    gw = await grpc_gateway(gateway_factory, backend.port, max_body_bytes=10_000)
    client_stream = method(channel_factory(gw), "stream_unary", "ClientStream")
    with pytest.raises(grpc.RpcError) as caught:
        await run(client_stream, iter([b"x" * 4000] * 5), timeout=5)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    await settled(gw)
    await poll(lambda: backend.record.active == 0, "the backend's call ended")


async def test_a_call_past_its_own_grpc_timeout_is_deadline_exceeded_without_blaming_the_endpoint(
        gateway_factory: GatewayFactory, backend: GrpcBackend) -> None:
    gw = await grpc_gateway(gateway_factory, backend.port, passive_health=PassiveHealth(consecutive_failures=1))
    client = await H2Client.open(gw.port)
    try:
        started = asyncio.get_running_loop().time()
        answer = await client.request("/test.Echo/Unary", "POST", [
            ("content-type", "application/grpc"), ("te", "trailers"), ("grpc-timeout", "300m")],
            b"\x00\x00\x00\x00\x07sleep:3")
        took = asyncio.get_running_loop().time() - started
        assert dict(answer.headers)["grpc-status"] == "4"
        assert 0.25 < took < 2
        ep = next(iter(gw.state.runtime.services["default/echo"].balancer.endpoints()))  # type: ignore[union-attr]
        assert ep.consecutive_failures == 0
        assert ep.ejections == 0
        await settled(gw)
    finally:
        await client.close()
