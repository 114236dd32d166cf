"""Red team, issue 13: hostile gRPC (h2c) upstreams seen by a gRPC client over
HTTP/2. An upstream that resets its stream after the answer started, or ends it
without any grpc-status, or sends trailers holding control characters or a status
that is not a number: the client always gets a well-formed end (a gRPC status in
trailers, or a reset), the endpoint's in-flight count and the pool's streams
return to zero."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import pytest

from tests.harness.app_fixtures import Gateway, GatewayFactory, poll, service
from tests.harness.h2_tools import H2Client
from vocelio_contract.config import Endpoint, GatewayConfig, HealthCheck, Retry
from vocelio_proxy.lifecycle import appkeys as keys
from vocelio_proxy.settings import Http2Settings

GRPC_HEADERS = [("content-type", "application/grpc"), ("te", "trailers")]
MESSAGE = b"\x00\x00\x00\x00\x02hi"


class _Hostile:
    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour
        self.port = 0
        self.tasks: set[asyncio.Task[None]] = set()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=False, validate_outbound_headers=False, normalize_outbound_headers=False))
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        try:
            while data := await reader.read(65536):
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.StreamEnded):
                        self._answer(conn, event.stream_id or 0)
                    elif isinstance(event, h2.events.DataReceived):
                        conn.acknowledge_received_data(event.flow_controlled_length or 0, event.stream_id or 0)
                writer.write(conn.data_to_send())
                await writer.drain()
        except (ConnectionError, h2.exceptions.H2Error):
            pass
        finally:
            writer.close()
            self.tasks.discard(task)

    def _answer(self, conn: h2.connection.H2Connection, sid: int) -> None:
        conn.send_headers(sid, [(b":status", b"200"), (b"content-type", b"application/grpc")])
        conn.send_data(sid, MESSAGE)
        if self.behaviour == "reset-mid-stream":
            conn.reset_stream(sid, h2.errors.ErrorCodes.INTERNAL_ERROR)
        elif self.behaviour == "no-status":
            conn.end_stream(sid)
        elif self.behaviour == "control-chars-in-message":
            conn.send_headers(sid, [(b"grpc-status", b"13"), (b"grpc-message", b"boom\x01\x7f")], end_stream=True)
        elif self.behaviour == "status-not-a-number":
            conn.send_headers(sid, [(b"grpc-status", b"banana")], end_stream=True)
        elif self.behaviour == "two-statuses":
            conn.send_headers(sid, [(b"grpc-status", b"0"), (b"grpc-status", b"13")], end_stream=True)


@pytest.fixture
async def hostile_grpc() -> AsyncIterator[object]:
    servers: list[tuple[asyncio.Server, _Hostile]] = []

    async def make(behaviour: str) -> _Hostile:
        up = _Hostile(behaviour)
        server = await asyncio.start_server(up.serve, "127.0.0.1", 0)
        up.port = int(server.sockets[0].getsockname()[1])
        servers.append((server, up))
        return up

    yield make
    for server, up in servers:
        server.close()
        for task in list(up.tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*up.tasks, return_exceptions=True)


async def _clean(gw: Gateway) -> None:
    svc = gw.state.runtime.services["default/echo"]  # type: ignore[union-attr]
    pool = gw.app[keys.H2C_POOL]
    await poll(lambda: pool.stream_count() == 0, "no upstream stream open")
    await poll(lambda: all(ep.in_flight == 0 for ep in svc.balancer.endpoints()), "no request in flight")


#: What the client must see: the gateway's INTERNAL (13), UNAVAILABLE (14), or the upstream's own.
EXPECTED = {"reset-mid-stream": "14", "no-status": "13", "control-chars-in-message": "13",
            "status-not-a-number": "13", "two-statuses": "13"}


@pytest.mark.parametrize("behaviour", list(EXPECTED))
async def test_a_hostile_grpc_upstream_ending_gives_the_client_a_well_formed_end(
        gateway_factory: GatewayFactory, hostile_grpc: object, behaviour: str) -> None:
    up = await hostile_grpc(behaviour)  # type: ignore[operator]
    svc = service("echo", Endpoint(address="127.0.0.1", port=up.port), prefixes=["/test.Echo"], rewrite=None,
                  upstream_protocol="h2c", health_check=HealthCheck(enabled=False), retry=Retry(attempts=1))
    gw = await gateway_factory(GatewayConfig(services=[svc]), http2=Http2Settings(cleartext=True))
    client = await H2Client.open(gw.port)
    try:
        answer = await client.request("/test.Echo/Unary", "POST", GRPC_HEADERS, MESSAGE)
    finally:
        await client.close()
    assert answer.reset is None
    statuses = [v for k, v in answer.trailers or [] if k == "grpc-status"]
    # Never OK for a call that did not end with one status; never two; always a number.
    assert statuses == [EXPECTED[behaviour]], answer.trailers
    for _, value in answer.trailers or []:
        assert value.isprintable()
    await _clean(gw)
