"""Red team, issue 13: an HTTP/2 request translated for an HTTP/1.1 upstream must be
one the gateway's own HTTP/1.1 front would have accepted. A field value with a
control character (other than HTAB) is refused by the HTTP/1.1 parser with 400;
over HTTP/2 the same value must be a stream error and never reach the upstream,
or a backend behind the gateway reads bytes the gateway's HTTP/1.1 side never lets
through (header-injection and parser-differential material). The same holds for the
authority: `:authority` (or Host) that the HTTP/1.1 front refuses as a Host is a
stream error over HTTP/2, never a Host line an HTTP/1.1 upstream parses its own way."""

from __future__ import annotations

import pytest
from hyperframe.frame import GoAwayFrame, HeadersFrame, RstStreamFrame

from tests.harness.app_fixtures import Gateway, GatewayFactory, service
from tests.harness.h2_tools import H2Client, RawH2
from tests.harness.hostile import RecordingUpstream, RecordingUpstreamFactory, raw_request, status_of
from vocelio_contract.config import GatewayConfig
from vocelio_proxy.settings import Http2Settings

PROTOCOL_ERROR = 1
#: Every C0 control but HTAB, and DEL: what RFC 9110 §5.5 leaves out of field-value.
CONTROLS = [bytes([c]) for c in (*range(0x01, 0x09), *range(0x0B, 0x0D), *range(0x0E, 0x20), 0x7F)]


async def _gateway(gateway_factory: GatewayFactory, recording_upstream: RecordingUpstreamFactory,
                   ) -> tuple[Gateway, RecordingUpstream]:
    up = await recording_upstream()
    svc = service("svc", up.endpoint(), prefixes=["/api"], rewrite=None)
    gw = await gateway_factory(GatewayConfig(services=[svc]), http2=Http2Settings(cleartext=True))
    return gw, up


def _forwarded(up: RecordingUpstream) -> list[str]:
    return [r.target for r in up.requests if r.target.startswith("/api")]


async def _h2_ended_with(port: int, fields: list[tuple[bytes, bytes]]) -> list[int]:
    """Send one HTTP/2 request head that ends its stream, on a new connection; return the
    error codes of the RST_STREAM or GOAWAY frames that ended it ([] when it was answered)."""
    raw = await RawH2.open(port)
    try:
        frame = HeadersFrame(1)
        frame.data = raw.encoder.encode(fields)
        frame.flags.add("END_HEADERS")
        frame.flags.add("END_STREAM")
        raw.send(frame)
        await raw.drain()
        frames = await raw.read_until(
            lambda fs: any(isinstance(f, (RstStreamFrame, GoAwayFrame)) or "END_STREAM" in f.flags for f in fs))
        return [f.error_code for f in frames if isinstance(f, (RstStreamFrame, GoAwayFrame))]
    finally:
        raw.close()


async def test_a_control_character_in_a_field_value_is_refused_on_http1_and_on_http2_alike(
        gateway_factory: GatewayFactory, recording_upstream: RecordingUpstreamFactory) -> None:
    gw, up = await _gateway(gateway_factory, recording_upstream)
    for ctl in CONTROLS:
        value = b"a" + ctl + b"b"
        answer = await raw_request(gw.port, b"GET /api/h1 HTTP/1.1\r\nHost: gw.test\r\nx-a: " + value
                                   + b"\r\nConnection: close\r\n\r\n")
        assert status_of(answer) == 400, ctl
        codes = await _h2_ended_with(gw.port, [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"gw.test"),
                                               (b":path", b"/api/h2"), (b"x-a", value)])
        assert codes, ctl
        assert codes[0] == PROTOCOL_ERROR, ctl
    assert _forwarded(up) == [], "a value the HTTP/1.1 front refuses reached the upstream over HTTP/2"


async def test_a_horizontal_tab_and_obs_text_in_a_value_still_pass_on_http2(
        gateway_factory: GatewayFactory, recording_upstream: RecordingUpstreamFactory) -> None:
    """The refusal is of controls only: what HTTP/1.1 accepts (HTAB, bytes over 0x7f) passes."""
    gw, up = await _gateway(gateway_factory, recording_upstream)
    client = await H2Client.open(gw.port)
    try:
        answer = await client.request("/api/ok", headers=[("x-a", "a\tb"), ("x-b", "caf\u00e9")])
    finally:
        await client.close()
    assert answer.status == 200
    assert _forwarded(up) == ["/api/ok"]
    assert up.requests[-1].header("x-a") == ["a\tb"]


@pytest.mark.parametrize("ctl", [b"\x01", b"\x1f", b"\x7f"])
async def test_a_control_character_in_a_cookie_crumb_never_reaches_the_upstream(
        gateway_factory: GatewayFactory, recording_upstream: RecordingUpstreamFactory, ctl: bytes) -> None:
    gw, up = await _gateway(gateway_factory, recording_upstream)
    codes = await _h2_ended_with(gw.port, [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"gw.test"),
                                           (b":path", b"/api/c"), (b"cookie", b"a=1"), (b"cookie", b"b=" + ctl)])
    assert codes
    assert _forwarded(up) == []


#: Authorities the HTTP/1.1 front refuses as a Host (400): a second colon, a port that is
#: not digits, brackets around a name, a bracket inside a name, userinfo, a space.
BAD_AUTHORITIES = [b"gw.test:80:90", b"gw.test:8x", b"[gw.test]", b"gw[1].test", b"user@gw.test", b"gw.test:80@x",
                   b"gw test"]


@pytest.mark.parametrize("authority", BAD_AUTHORITIES)
@pytest.mark.parametrize("carrier", [":authority", "host"])
async def test_an_authority_the_http1_front_refuses_is_refused_over_http2_and_never_reaches_the_upstream(
        gateway_factory: GatewayFactory, recording_upstream: RecordingUpstreamFactory, authority: bytes,
        carrier: str) -> None:
    gw, up = await _gateway(gateway_factory, recording_upstream)
    answer = await raw_request(gw.port, b"GET /api/h1 HTTP/1.1\r\nHost: " + authority
                               + b"\r\nConnection: close\r\n\r\n")
    assert status_of(answer) == 400
    codes = await _h2_ended_with(gw.port, [(b":method", b"GET"), (b":scheme", b"http"), (carrier.encode(), authority),
                                           (b":path", b"/api/h2")])
    assert codes, f"{authority!r} was answered over HTTP/2"
    assert codes[0] == PROTOCOL_ERROR
    assert _forwarded(up) == []


@pytest.mark.parametrize("method", [b"head", b"get", b"Connect", b"oPTIONS", b"post"])
async def test_a_method_in_lower_case_is_refused_over_http2_as_on_http1(
        gateway_factory: GatewayFactory, recording_upstream: RecordingUpstreamFactory, method: bytes) -> None:
    """`head` is not HEAD to the gateway (it would wait for a body) but is to a backend that
    folds case; the HTTP/1.1 front refuses it (llhttp), and so must HTTP/2."""
    gw, up = await _gateway(gateway_factory, recording_upstream)
    answer = await raw_request(gw.port, method + b" /api/h1 HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n")
    assert status_of(answer) == 400
    codes = await _h2_ended_with(gw.port, [(b":method", method), (b":scheme", b"http"), (b":authority", b"gw.test"),
                                           (b":path", b"/api/h2")])
    assert codes, f"{method!r} was answered over HTTP/2"
    assert codes[0] == PROTOCOL_ERROR
    assert _forwarded(up) == []


async def test_an_upper_case_extension_method_still_reaches_the_upstream_over_http2(
        gateway_factory: GatewayFactory, recording_upstream: RecordingUpstreamFactory) -> None:
    gw, up = await _gateway(gateway_factory, recording_upstream)
    client = await H2Client.open(gw.port)
    try:
        answer = await client.request("/api/dav", method="PROPFIND")
    finally:
        await client.close()
    assert answer.status == 200
    assert [r.method for r in up.requests if r.target == "/api/dav"] == ["PROPFIND"]


@pytest.mark.parametrize("declared", [b"10", b"1"])
async def test_a_content_length_on_a_request_that_ends_with_its_headers_is_a_stream_error(
        gateway_factory: GatewayFactory, recording_upstream: RecordingUpstreamFactory, declared: bytes) -> None:
    """RFC 9113 §8.1.1: Content-Length that the DATA frames (none here) do not add up to is
    malformed; the upstream never gets a request whose declared length and body disagree."""
    gw, up = await _gateway(gateway_factory, recording_upstream)
    codes = await _h2_ended_with(gw.port, [(b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"gw.test"),
                                           (b":path", b"/api/cl"), (b"content-length", declared)])
    assert codes, "answered"
    assert codes[0] == PROTOCOL_ERROR
    assert _forwarded(up) == []
    client = await H2Client.open(gw.port)
    try:
        # Content-Length: 0 with no DATA is well-formed.
        answer = await client.request("/api/zero", method="POST", headers=[("content-length", "0")])
    finally:
        await client.close()
    assert answer.status == 200


async def test_a_path_over_the_url_limit_is_414_on_http2_as_on_http1(
        gateway_factory: GatewayFactory, recording_upstream: RecordingUpstreamFactory) -> None:
    """`limits.max_url_bytes` (8192) bounds the target on both protocols: over HTTP/2 a longer
    :path (which the 32 KiB header list would admit) never reaches the router or the upstream."""
    gw, up = await _gateway(gateway_factory, recording_upstream)
    long_path = "/api/" + "a" * 9000
    fits = "/api/" + "b" * 8000
    h1 = await raw_request(gw.port, f"GET {long_path} HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n".encode())
    assert status_of(h1) == 414
    client = await H2Client.open(gw.port)
    try:
        refused = await client.request(long_path)
        served = await client.request(fits)
    finally:
        await client.close()
    assert refused.status == 414
    assert b"URL exceeds 8192 bytes" in refused.body
    assert served.status == 200
    assert _forwarded(up) == [fits]


#: Smuggling shapes HTTP/2 could carry into an HTTP/1.1 request line or header block (held).
SMUGGLING = {
    "colon-in-name": [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"gw.test"), (b":path", b"/api/s"),
                      (b"x-a:b", b"1")],
    "absolute-path": [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"gw.test"),
                      (b":path", b"http://evil.test/api/s")],
    "asterisk-with-get": [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"gw.test"), (b":path", b"*")],
    "space-in-path": [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"gw.test"),
                      (b":path", b"/api/s HTTP/1.1\r\nx: y")],
    "request-line-in-method": [(b":method", b"GET /api/s HTTP/1.1"), (b":scheme", b"http"),
                               (b":authority", b"gw.test"), (b":path", b"/api/s")],
    "transfer-encoding": [(b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"gw.test"),
                          (b":path", b"/api/s"), (b"transfer-encoding", b"chunked")],
    "duplicate-path": [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"gw.test"), (b":path", b"/api/s"),
                       (b":path", b"/admin")],
}


@pytest.mark.parametrize("fields", list(SMUGGLING.values()), ids=list(SMUGGLING))
async def test_smuggling_shapes_never_reach_the_http1_upstream(
        gateway_factory: GatewayFactory, recording_upstream: RecordingUpstreamFactory,
        fields: list[tuple[bytes, bytes]]) -> None:
    gw, up = await _gateway(gateway_factory, recording_upstream)
    codes = await _h2_ended_with(gw.port, fields)
    assert codes
    assert _forwarded(up) == []
    assert up.protocol_errors == []
