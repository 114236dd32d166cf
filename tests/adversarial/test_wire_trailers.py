"""Trailers are not headers (#5): fields a client sends after a chunked body
never reach the upstream, in its headers or its trailers, whatever their
names; trailers larger than the header budget are refused. Raw sockets, the
recording upstream (h11 records trailers separately), resource counters."""

from __future__ import annotations

import json

import pytest

from tests.harness.app_fixtures import Gateway, GatewayFactory, service
from tests.harness.hostile import (
    RecordingUpstream,
    RecordingUpstreamFactory,
    raw_request,
    resources,
    settled,
    status_of,
)
from vocelio_contract.config import GatewayConfig

HEAD = b"POST /api/v1/svc/upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
BODY = b"5\r\nhello\r\n6\r\n world\r\n"

FORGED = [
    [b"Authorization: Bearer forged"],
    [b"X-API-Key: stolen-key"],
    [b"X-Vocelio-User: admin", b"X-Vocelio-Tenant: other", b"X-Vocelio-Roles: root"],
    [b"X-Forwarded-For: 10.0.0.1", b"X-Request-ID: forged-id"],
    [b"Cookie: session=forged", b"x-api-key: lower"],
    [b"Host: evil.example", b"Expect: 100-continue"],
]


@pytest.fixture
async def edge(recording_upstream: RecordingUpstreamFactory,
               gateway_factory: GatewayFactory) -> tuple[Gateway, RecordingUpstream]:
    up = await recording_upstream()
    gw = await gateway_factory(GatewayConfig(services=[service("svc", up.endpoint(), health_check={"enabled": False})]),
                               limits={"max_header_bytes": 2048})
    return gw, up


@pytest.mark.parametrize("fields", FORGED, ids=[f[0].split(b":")[0].decode() for f in FORGED])
@pytest.mark.parametrize("split", [False, True], ids=["one-packet", "trailers-later"])
async def test_trailer_fields_never_reach_the_upstream(edge: tuple[Gateway, RecordingUpstream], fields: list[bytes],
                                                       split: bool) -> None:
    gw, up = edge
    before = resources(gw.app)
    trailer = b"0\r\n" + b"".join(f + b"\r\n" for f in fields) + b"\r\n"
    data: bytes | list[bytes] = [HEAD + BODY, trailer] if split else HEAD + BODY + trailer
    answer = await raw_request(gw.port, data, pause_s=0.2 if split else 0.0)
    assert status_of(answer) == 200, answer
    [received] = up.requests
    assert received.body == b"hello world"
    assert received.trailers == []
    sent_names = {name.split(b":")[0].strip().lower().decode() for name in fields}
    forwarded = {name.lower() for name, _ in received.headers}
    for name in sent_names - {"host", "x-forwarded-for", "x-request-id"}:
        assert name not in forwarded, name
    # Gateway-owned headers carry the gateway's values, never the trailer's.
    assert received.header("x-forwarded-for") == ["127.0.0.1"]
    assert received.header("x-request-id") != ["forged-id"]
    assert received.header("host") == ["a"]
    raw = b"".join(up.raw)
    for field in fields:
        assert field.split(b":", 1)[1].strip() not in raw, field
    await settled(gw.app, before)


@pytest.mark.parametrize("trailer", [
    b"X-Big: " + b"a" * 3000 + b"\r\n",
    b"".join(b"X-%d: %s\r\n" % (i, b"v" * 100) for i in range(30)),
    b"".join(b"X-%d: v\r\n" % i for i in range(150)),
], ids=["one-large-field", "many-medium-fields", "too-many-fields"])
async def test_trailers_over_the_header_budget_are_refused(edge: tuple[Gateway, RecordingUpstream],
                                                           trailer: bytes) -> None:
    gw, up = edge
    before = resources(gw.app)
    answer = await raw_request(gw.port, HEAD + BODY + b"0\r\n" + trailer + b"\r\n")
    assert status_of(answer) == 431, answer
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["status_code"] == 431
    assert up.requests == []  # no complete request reached the upstream
    await settled(gw.app, before)
