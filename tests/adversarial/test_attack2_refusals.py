"""Attacks on the client side of the wire (helper attack2): an answer the
gateway sends before it read a request's body must reach the client.

docs/security/wire.md: "Every refusal is the JSON error envelope ... with
`Connection: close`, followed by a close." A close while unread body bytes
sit in the socket makes the kernel send a reset, and a reset makes the
client's kernel drop the answer it has not read yet: the refusal is lost
(nginx's `lingering_close` exists for this; the gateway's own connection-cap
refusal already reads and drops the request for the same reason)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from tests.harness.app_fixtures import GatewayFactory, service
from tests.harness.hostile import RecordingUpstreamFactory, status_of
from vocelio_contract.config import GatewayConfig

BODY = 1_000_000


async def _upload_then_read(port: int, head: bytes, body: bytes) -> bytes:
    """A client that sends its whole request, then reads the answer (as curl does
    for a body it already wrote): whatever arrived before a close or a reset."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    out = bytearray()
    try:
        writer.write(head + body)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        await asyncio.sleep(0.3)  # the traffic pattern under test: read only after the gateway has answered
        with contextlib.suppress(ConnectionError, TimeoutError):
            while True:
                chunk = await asyncio.wait_for(reader.read(65536), 3)
                if not chunk:
                    break
                out.extend(chunk)
        return bytes(out)
    finally:
        writer.transport.abort()


REFUSED_UPLOADS = {
    "413 for a declared length over the limit": b"/api/v1/svc/upload",
    "404 for an unrouted path": b"/nowhere/upload",
}


@pytest.mark.parametrize("path", REFUSED_UPLOADS.values(), ids=REFUSED_UPLOADS.keys())
async def test_a_refusal_sent_before_a_large_body_was_read_reaches_the_client(
        recording_upstream: RecordingUpstreamFactory, gateway_factory: GatewayFactory, path: bytes) -> None:
    up = await recording_upstream()
    limit = 1000 if path.startswith(b"/api") else 10 * BODY
    gw = await gateway_factory(GatewayConfig(services=[service("svc", up.endpoint(), health_check={"enabled": False})]),
                               limits={"max_body_bytes": limit})
    head = b"POST " + path + b" HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % BODY
    got = await _upload_then_read(gw.port, head, b"x" * BODY)
    assert status_of(got) == (413 if limit < BODY else 404), got[:200]
    assert b'"request_id"' in got
    assert up.requests == []
