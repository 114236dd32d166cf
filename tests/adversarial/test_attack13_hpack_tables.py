"""Red team, issue 13: HPACK dynamic table abuse. A peer's SETTINGS_HEADER_TABLE_SIZE
is the most it lets the gateway's encoder keep (RFC 7541 §4.2), not a size the
gateway must use: a client (or an h2c upstream) announcing 1 GiB would otherwise
make the gateway remember every distinct header it ever sent on the connection
(request ids, trace ids, dates), a per-connection memory leak paid for with
ordinary requests. The gateway's encoder keeps at most the protocol's default
4096 bytes on both sides, as nghttp2 and Envoy do; decoding the gateway's blocks
with the peer's table (the client's/upstream's own decoder) shows the size used."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import pytest
from h2.settings import SettingCodes

from tests.harness.app_fixtures import GatewayFactory, UpstreamFactory, service
from tests.harness.h2_tools import H2Client
from vocelio_contract.config import Endpoint, GatewayConfig, HealthCheck, Retry
from vocelio_proxy.settings import Http2Settings

HUGE_TABLE = 1 << 30
DEFAULT_TABLE = 4096
REQUESTS = 120


async def test_a_client_announcing_a_huge_hpack_table_gets_an_encoder_table_of_at_most_4096_bytes(
        gateway_factory: GatewayFactory, upstream_factory: UpstreamFactory) -> None:
    up = await upstream_factory()
    svc = service("svc", up.endpoint(), prefixes=["/api"], rewrite=None)
    gw = await gateway_factory(GatewayConfig(services=[svc]), http2=Http2Settings(cleartext=True))
    client = await H2Client.open(gw.port)
    try:
        client.conn.update_settings({SettingCodes.HEADER_TABLE_SIZE: HUGE_TABLE})
        client.flush()
        await client.barrier()
        for i in range(REQUESTS):
            answer = await client.request(f"/api/item/{i}")
            assert answer.status == 200
        # The client's decoder mirrors the gateway's encoder table entry for entry.
        used = client.conn.decoder.header_table._current_size
        assert used <= DEFAULT_TABLE, f"the gateway's encoder keeps {used} bytes for one connection"
        # Still a working connection whose answers decode.
        assert (await client.request("/api/last")).status == 200
    finally:
        await client.close()


class _TableUpstream:
    """An h2c upstream that announces a 1 GiB HPACK table and answers every stream 200;
    `largest` is the most its decoder (a mirror of the gateway's encoder) held."""

    def __init__(self) -> None:
        self.largest = 0
        self.streams = 0
        self.port = 0
        self.tasks: set[asyncio.Task[None]] = set()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        conn.update_settings({SettingCodes.HEADER_TABLE_SIZE: HUGE_TABLE})
        writer.write(conn.data_to_send())
        try:
            while data := await reader.read(65536):
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        self.streams += 1
                        self.largest = max(self.largest, conn.decoder.header_table._current_size)
                        conn.send_headers(event.stream_id or 0, [(":status", "200"), ("content-length", "2")])
                        conn.send_data(event.stream_id or 0, b"ok", end_stream=True)
                    elif isinstance(event, h2.events.DataReceived):
                        conn.acknowledge_received_data(event.flow_controlled_length or 0, event.stream_id or 0)
                writer.write(conn.data_to_send())
                await writer.drain()
        except (ConnectionError, h2.exceptions.H2Error):
            pass
        finally:
            writer.close()
            self.tasks.discard(task)


@pytest.fixture
async def table_upstream() -> AsyncIterator[_TableUpstream]:
    up = _TableUpstream()
    server = await asyncio.start_server(up.serve, "127.0.0.1", 0)
    up.port = int(server.sockets[0].getsockname()[1])
    yield up
    server.close()
    for task in list(up.tasks):
        task.cancel()
    with contextlib.suppress(Exception):
        await asyncio.gather(*up.tasks, return_exceptions=True)


async def test_an_h2c_upstream_announcing_a_huge_hpack_table_gets_an_encoder_table_of_at_most_4096_bytes(
        gateway_factory: GatewayFactory, table_upstream: _TableUpstream) -> None:
    svc = service("echo", Endpoint(address="127.0.0.1", port=table_upstream.port), prefixes=["/api"],
                  rewrite=None, upstream_protocol="h2c", health_check=HealthCheck(enabled=False),
                  retry=Retry(attempts=1))
    gw = await gateway_factory(GatewayConfig(services=[svc]), http2=Http2Settings(cleartext=True))
    for i in range(REQUESTS):
        status, _, _ = await gw.get(f"/api/item/{i}")
        assert status == 200
    assert table_upstream.streams == REQUESTS
    assert table_upstream.largest <= DEFAULT_TABLE, (
        f"the gateway's encoder keeps {table_upstream.largest} bytes on one upstream connection")
