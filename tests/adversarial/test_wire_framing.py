"""Request framing and targets as a hostile client sends them, on raw sockets,
against a gateway in front of the recording upstream (h11): every message the
gateway refuses gets the JSON envelope with its status, `Connection: close`
and a close, reaches no upstream, and leaves no resource behind; messages it
accepts mean exactly one thing to the upstream (RFC 9112 §3, §6, §7)."""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import HealthCheck, given, settings

from tests.harness.app_fixtures import Gateway, GatewayFactory, service
from tests.harness.hostile import (
    Received,
    RecordingUpstream,
    RecordingUpstreamFactory,
    echo_responder,
    raw_request,
    resources,
    settled,
    status_of,
)
from tests.harness.wire_tools import read_with_gateway, responses_in
from tests.unit.test_http1_differential import streams
from vocelio_contract.config import GatewayConfig
from vocelio_contract.paths import PathError, normalize_path

P = b"/api/v1/svc"


def _head(line: bytes, *fields: bytes) -> bytes:
    return line + b"\r\n" + b"".join(f + b"\r\n" for f in fields) + b"\r\n"


def _get(target: bytes = P + b"/x", *fields: bytes, version: bytes = b"HTTP/1.1") -> bytes:
    return _head(b"GET " + target + b" " + version, *fields)


def _post(*fields: bytes, body: bytes = b"") -> bytes:
    return _head(b"POST " + P + b"/x HTTP/1.1", b"Host: a", *fields) + body


REFUSED = [
    # (#2) a request-target has no fragment (RFC 9112 §3.2)
    ("fragment", _get(P + b"/x#", b"Host: a"), 400),
    ("fragment-after-admin", _get(P + b"/admin#frag", b"Host: a"), 400),
    ("fragment-after-query", _get(P + b"/x?a=1#b", b"Host: a"), 400),
    ("fragment-in-absolute-form", _get(b"http://a" + P + b"/x#f", b"Host: a"), 400),
    # (#9) Host (RFC 9112 §3.2: MUST 400)
    ("no-host", _get(P + b"/x"), 400),
    ("two-hosts", _get(P + b"/x", b"Host: a", b"Host: b"), 400),
    ("same-host-twice", _get(P + b"/x", b"Host: a", b"host: a"), 400),
    ("host-with-userinfo-trick", _get(P + b"/x", b"Host: a:@evil"), 400),
    ("host-with-space", _get(P + b"/x", b"Host: a b"), 400),
    ("host-with-path", _get(P + b"/x", b"Host: a/b"), 400),
    ("absolute-form-userinfo", _get(b"http://u@a" + P + b"/x", b"Host: a"), 400),
    ("absolute-form-no-authority", _get(b"http://" + P + b"/x", b"Host: a"), 400),
    ("absolute-form-other-scheme", _get(b"ftp://a" + P + b"/x", b"Host: a"), 400),
    ("asterisk-form-for-get", _get(b"*", b"Host: a"), 400),
    ("authority-form-for-get", _get(b"a:80", b"Host: a"), 400),
    ("non-ascii-target", _get(P + b"/\xc3\xa9", b"Host: a"), 400),
    ("http-2-in-http-1", _get(P + b"/x", b"Host: a", version=b"HTTP/2.0"), 505),
    ("http-0-9", _get(P + b"/x", b"Host: a", version=b"HTTP/0.9"), 505),
    # Transfer-Encoding and Content-Length (RFC 9112 §6.1, §6.3)
    ("cl-te", _post(b"Content-Length: 6", b"Transfer-Encoding: chunked", body=b"0\r\n\r\nG"), 400),
    ("te-cl", _post(b"Transfer-Encoding: chunked", b"Content-Length: 3", body=b"0\r\n\r\n"), 400),
    ("te-chunked-not-last", _post(b"Transfer-Encoding: chunked, gzip", body=b"0\r\n\r\n"), 400),
    ("te-unknown-coding", _post(b"Transfer-Encoding: xchunked", body=b"0\r\n\r\n"), 400),
    ("te-identity", _post(b"Transfer-Encoding: identity", body=b"0\r\n\r\n"), 400),
    ("te-gzip-then-chunked", _post(b"Transfer-Encoding: gzip, chunked", body=b"0\r\n\r\n"), 501),
    ("te-empty-element", _post(b"Transfer-Encoding: ,chunked", body=b"0\r\n\r\n"), 501),
    ("te-twice", _post(b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked", body=b"0\r\n\r\n"), 400),
    ("te-split-over-fields", _post(b"Transfer-Encoding: gzip", b"Transfer-Encoding: chunked", body=b"0\r\n\r\n"), 400),
    ("te-in-http-1-0", _head(b"POST " + P + b"/x HTTP/1.0", b"Transfer-Encoding: chunked") + b"0\r\n\r\n", 400),
    ("cl-twice-same", _post(b"Content-Length: 1", b"Content-Length: 1", body=b"x"), 400),
    ("cl-twice-different", _post(b"Content-Length: 1", b"Content-Length: 2", body=b"xy"), 400),
    ("cl-list", _post(b"Content-Length: 1, 1", body=b"x"), 400),
    ("cl-plus", _post(b"Content-Length: +1", body=b"x"), 400),
    ("cl-negative", _post(b"Content-Length: -1", body=b"x"), 400),
    ("cl-hex", _post(b"Content-Length: 0x1", body=b"x"), 400),
    ("cl-overflow", _post(b"Content-Length: 99999999999999999999999", body=b"x"), 400),
    ("upgrade-with-body", _get(P + b"/ws", b"Host: a", b"Connection: Upgrade", b"Upgrade: websocket",
                               b"Content-Length: 5") + b"hello", 400),
    # Field syntax (RFC 9112 §5, RFC 9110 §5.5)
    ("obs-fold", _get(P + b"/x", b"Host: a", b"X-A: one", b" two"), 400),
    ("obs-fold-tab", _get(P + b"/x", b"Host: a", b"X-A: one", b"\ttwo"), 400),
    ("space-before-colon", _get(P + b"/x", b"Host: a", b"X-A : v"), 400),
    ("tab-before-colon", _get(P + b"/x", b"Host: a", b"X-A\t: v"), 400),
    ("bare-lf-head", b"GET " + P + b"/x HTTP/1.1\nHost: a\n\n", 400),
    ("bare-lf-in-fields", _get(P + b"/x", b"Host: a\nX-A: v"), 400),
    ("bare-cr-in-value", _get(P + b"/x", b"Host: a", b"X-A: a\rb"), 400),
    ("nul-in-value", _get(P + b"/x", b"Host: a", b"X-A: a\x00b"), 400),
    ("control-in-value", _get(P + b"/x", b"Host: a", b"X-A: a\x01b"), 400),
    ("del-in-value", _get(P + b"/x", b"Host: a", b"X-A: a\x7fb"), 400),
    ("nul-in-name", _get(P + b"/x", b"Host: a", b"X\x00A: v"), 400),
    ("separator-in-name", _get(P + b"/x", b"Host: a", b"X(A): v"), 400),
    ("empty-name", _get(P + b"/x", b"Host: a", b": v"), 400),
    ("non-ascii-name", _get(P + b"/x", b"Host: a", b"X-\xc3\x84: v"), 400),
    ("space-in-name", _get(P + b"/x", b"Host: a", b"X A: v"), 400),
    ("lower-case-method", _head(b"get " + P + b"/x HTTP/1.1", b"Host: a"), 400),
]


@pytest.fixture
async def edge(recording_upstream: RecordingUpstreamFactory,
               gateway_factory: GatewayFactory) -> tuple[Gateway, RecordingUpstream]:
    up = await recording_upstream()
    gw = await gateway_factory(GatewayConfig(services=[service("svc", up.endpoint(),
                                                               health_check={"enabled": False})]))
    return gw, up


def _envelope(answer: bytes) -> tuple[bytes, dict[str, object]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return head.lower(), json.loads(body)


@pytest.mark.parametrize(("name", "data", "status"), REFUSED, ids=[r[0] for r in REFUSED])
async def test_a_message_with_ambiguous_framing_or_target_is_refused_and_closed(edge: tuple[Gateway, RecordingUpstream],
                                                                                name: str, data: bytes,
                                                                                status: int) -> None:
    gw, up = edge
    before = resources(gw.app)
    started = time.monotonic()
    answer = await raw_request(gw.port, data, read_timeout_s=5)
    assert time.monotonic() - started < 4, "the gateway closed the connection"
    assert status_of(answer) == status, answer
    head, envelope = _envelope(answer)
    assert envelope["status_code"] == status
    assert envelope["request_id"]
    assert b"connection: close" in head
    assert up.requests == []
    assert not any(up.raw)
    await settled(gw.app, before)


async def test_a_bad_message_after_good_pipelined_ones_ends_the_connection_after_their_answers(
        edge: tuple[Gateway, RecordingUpstream]) -> None:
    gw, up = edge
    before = resources(gw.app)
    good = _get(P + b"/one", b"Host: a") + _get(P + b"/two", b"Host: a")
    answer = await raw_request(gw.port, good + _post(b"Content-Length: 3", b"Transfer-Encoding: chunked",
                                                     body=b"0\r\n\r\nGET " + P + b"/smuggled HTTP/1.1\r\n\r\n"))
    answers = responses_in(answer)
    assert [status for status, _, _ in answers] == [200, 200, 400], answer
    assert answers[2][1]["connection"] == "close"
    assert up.paths() == ["/one", "/two"]
    await settled(gw.app, before)


async def test_an_absolute_form_target_routes_by_its_path_and_its_authority_replaces_host(
        edge: tuple[Gateway, RecordingUpstream]) -> None:
    gw, up = edge
    answer = await raw_request(gw.port, _get(b"http://Public.Example:8080" + P + b"/items?q=1", b"Host: other",
                                             b"Connection: close"))
    assert status_of(answer) == 200, answer
    [received] = up.requests
    assert received.target == "/items?q=1"
    assert received.header("host") == ["Public.Example:8080"]
    assert received.header("x-forwarded-host") == ["Public.Example:8080"]


async def test_trusted_hosts_are_checked_against_the_authority_of_an_absolute_form_target(
        recording_upstream: RecordingUpstreamFactory, gateway_factory: GatewayFactory) -> None:
    up = await recording_upstream()
    gw = await gateway_factory(GatewayConfig(services=[service("svc", up.endpoint(), health_check={"enabled": False})]),
                               trusted_hosts=["public.example"])
    allowed = await raw_request(gw.port, _get(b"http://public.example" + P + b"/x", b"Host: evil.example",
                                              b"Connection: close"))
    refused = await raw_request(gw.port, _get(b"http://evil.example" + P + b"/x", b"Host: public.example",
                                              b"Connection: close"))
    assert (status_of(allowed), status_of(refused)) == (200, 421)
    assert up.paths() == ["/x"]


async def test_an_http_1_0_request_needs_no_host(edge: tuple[Gateway, RecordingUpstream]) -> None:
    gw, up = edge
    answer = await raw_request(gw.port, _get(P + b"/old", version=b"HTTP/1.0"))
    assert status_of(answer) == 200
    assert up.paths() == ["/old"]


async def test_te_trailers_is_understood_and_never_forwarded(edge: tuple[Gateway, RecordingUpstream]) -> None:
    gw, up = edge
    answer = await raw_request(gw.port, _get(P + b"/x", b"Host: a", b"TE: trailers", b"Connection: close"))
    assert status_of(answer) == 200
    assert up.requests[0].header("te") == []


async def test_a_chunked_upload_reaches_the_upstream_with_its_framing_redone(
        edge: tuple[Gateway, RecordingUpstream]) -> None:
    gw, up = edge
    answer = await raw_request(gw.port, _post(b"Transfer-Encoding: Chunked", b"Connection: close",
                                              body=b"5;ext=1\r\nhello\r\n1\r\n!\r\n0\r\n\r\n"))
    assert status_of(answer) == 200
    [received] = up.requests
    assert received.body == b"hello!"
    assert received.trailers == []
    assert up.protocol_errors == []


END = b"GET /__end HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=streams)
async def test_generated_streams_reach_the_upstream_exactly_as_the_gateway_read_them(
        catch_all: tuple[Gateway, RecordingUpstream], data: bytes) -> None:
    gw, up = catch_all
    up.requests.clear()
    up.protocol_errors.clear()
    read = read_with_gateway(data)
    whole = read.end == "ok" and (not read.requests or read.requests[-1].keep_alive)
    # A stream read whole ends with a request that closes; any other ends by refusal or timeout.
    await raw_request(gw.port, data + END if whole else data, read_timeout_s=3)
    # Whatever the gateway forwarded, the strict upstream (h11) parsed without complaint,
    # with the method and body the gateway's reader saw, in order; requests the pipeline
    # refused (paths, methods) are skipped. A body the client never finished reaches the
    # upstream cut (the gateway hangs up), never complete.
    cut = "peer closed connection without sending complete message body"
    assert [e for e in up.protocol_errors if whole or not e.startswith(cut)] == []
    received = [r for r in up.requests if r.target != "/__end"]
    candidates = iter(r for r in read.requests if r.target.startswith("/") and r.method != "CONNECT")
    for got in received:
        # In order, each forwarded request is one the reader read, body included (the
        # pipeline may refuse some in between: auth, paths).
        wanted = (got.method, got.target, got.body)
        parsed = next((p for p in candidates if (p.method, _routed(p.target), p.body) == wanted), None)
        assert parsed is not None, (got, read)
        assert got.trailers == []
    if whole:
        assert [r.target for r in up.requests][-1:] == ["/__end"]


def _routed(target: str) -> str | None:
    """The target the catch-all route sends upstream (normalised path, query as sent)."""
    path, mark, query = target.partition("?")
    try:
        return normalize_path(path) + mark + query
    except PathError:
        return None


async def _echo_or_empty(req: Received) -> tuple[int, list[tuple[str, str]], bytes]:
    if req.method == "HEAD":
        return 200, [], b""
    return await echo_responder(req)


@pytest.fixture
async def catch_all(recording_upstream: RecordingUpstreamFactory,
                    gateway_factory: GatewayFactory) -> tuple[Gateway, RecordingUpstream]:
    up = await recording_upstream(_echo_or_empty)
    gw = await gateway_factory(GatewayConfig(services=[service("all", up.endpoint(), prefixes=["/"], rewrite=None,
                                                               health_check={"enabled": False})]),
                               client_header_timeout_s=0.3, limits={"client_body_timeout_s": 0.3})
    return gw, up
