"""Trust inputs through a real gateway and the recording upstream (the classes the
attacker found, with variants): whatever X-Forwarded-For, path or method bytes a
client sends, every access-log line is exactly one JSON object and the upstream
gets one canonical client address; a `#` anywhere in the request target is a 400
that never reaches an upstream; failed authentications from anywhere in one IPv6
/64 pay into one limit; a JWT without a subject is a 401."""

from __future__ import annotations

import io
import json
import time
from typing import Any

import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.harness.app_fixtures import Gateway, GatewayFactory, poll, service
from tests.harness.hostile import (
    RecordingUpstream,
    RecordingUpstreamFactory,
    raw_request,
    resources,
    settled,
    status_of,
)
from tests.harness.trust_tools import envelope_of, request_bytes
from vocelio_contract.config import AuthPolicy, GatewayConfig
from vocelio_proxy.lifecycle import appkeys as keys
from vocelio_proxy.lifecycle.app import gateway_handler
from vocelio_proxy.wire.exchange import Exchange

LOG_FIELDS = {"ts", "level", "logger", "request_id", "method", "path", "host", "service", "status", "duration_ms",
              "upstream", "attempts", "client", "bytes_received", "bytes_sent",
              "trace_id", "span_id", "http_version"}


def one_service(up: RecordingUpstream, **kw: Any) -> GatewayConfig:
    return GatewayConfig(services=[service("svc", up.endpoint(), health_check={"enabled": False}, **kw)])


# -- the access log cannot be split or forged ------------------------------------------------

#: Bytes a header value or request line can carry past the parser: everything but CR, LF, NUL.
VALUE_BYTES = st.binary(max_size=60).map(lambda b: bytes(c for c in b if c not in b"\r\n\x00"))
#: A request-target: no space, CR, LF; starts under the routed prefix half of the time.
TARGET = st.tuples(st.sampled_from(["/api/v1/svc/", "/", ""]),
                   st.binary(max_size=40).map(lambda b: bytes(c for c in b if c not in b" \r\n\x00")))
METHOD = st.one_of(st.sampled_from([b"GET", b"POST", b"OPTIONS", b"DELETE"]),
                   st.binary(min_size=1, max_size=12).map(lambda b: bytes(c for c in b if c not in b" \r\n\x00")
                                                          or b"X"))


@pytest.fixture
def shared() -> dict[str, Any]:
    """One gateway and its log sink for all the examples of a hypothesis test."""
    return {}


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(xff=st.lists(VALUE_BYTES, min_size=1, max_size=3), target=TARGET, method=METHOD, request_id=VALUE_BYTES)
async def test_every_access_log_line_is_one_json_object_whatever_the_client_sends(
        recording_upstream: RecordingUpstreamFactory, gateway_factory: GatewayFactory, shared: dict[str, Any],
        xff: list[bytes], target: tuple[str, bytes], method: bytes, request_id: bytes) -> None:
    if not shared:
        up = await recording_upstream()
        sink = io.BytesIO()
        gw = await gateway_factory(one_service(up), access_log_sink=sink, access_log=True, trusted_proxies=2)
        shared.update(gw=gw, sink=sink)
    gw, sink = shared["gw"], shared["sink"]
    prefix, raw = target
    head = (method + b" " + prefix.encode() + raw + b" HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n"
            + b"".join(b"X-Forwarded-For: " + v + b"\r\n" for v in xff)
            + b"X-Request-ID: " + request_id + b"\r\n\r\n")
    await raw_request(gw.port, head, read_timeout_s=2)
    await poll(lambda: gw.app[keys.METRICS].in_flight_count == 0, "the request ended")
    gw.app[keys.ACCESS_LOG].flush()
    data = sink.getvalue()
    sink.seek(0)
    sink.truncate()
    for line in data.decode("ascii").splitlines():  # ASCII: every other character is escaped
        entry = json.loads(line)
        assert isinstance(entry, dict), line
        assert set(entry) == LOG_FIELDS, line
        assert entry["client"] == "127.0.0.1" or "%" not in entry["client"]


async def test_forged_zone_ids_and_spellings_reach_the_upstream_as_one_canonical_address(
        recording_upstream: RecordingUpstreamFactory, gateway_factory: GatewayFactory) -> None:
    up = await recording_upstream()
    gw = await gateway_factory(one_service(up), trusted_proxies=1)
    cases = {
        "fe80::1%eth0": "127.0.0.1", 'fe80::1%x"}{"forged":"1': "127.0.0.1", "::1%25x": "127.0.0.1",
        "2001:DB8::0:1": "2001:db8::1", "::ffff:198.51.100.4": "198.51.100.4", "[2001:db8::1]": "127.0.0.1",
        "198.51.100.4:443": "127.0.0.1",
    }
    for xff, client in cases.items():
        answer = await raw_request(gw.port, request_bytes("/api/v1/svc/x", [("X-Forwarded-For", xff)]))
        assert status_of(answer) == 200
        assert up.requests[-1].header("x-forwarded-for") == [client], xff


# -- '#' anywhere in the target ---------------------------------------------------------------

@pytest.mark.parametrize("target", [
    "/api/v1/svc/x#", "/api/v1/svc/x#frag", "/api/v1/svc/x?#", "/api/v1/svc/x?a=1#b", "/api/v1/svc/x?a=%23#b",
    "/api/v1/svc/?q=#/../admin", "/health#", "/health?x#y", "/metrics?#", "#", "/#/api/v1/svc/x",
])
@pytest.mark.parametrize("method", ["GET", "POST", "OPTIONS"])
async def test_a_raw_hash_anywhere_in_the_target_is_refused_before_routing(recording_upstream: RecordingUpstreamFactory,
                                                                           gateway_factory: GatewayFactory, target: str,
                                                                           method: str) -> None:
    up = await recording_upstream()
    gw = await gateway_factory(one_service(up))
    before = resources(gw.app)
    data = request_bytes(target, method=method) if method != "POST" else (
        request_bytes(target, [("Content-Length", "2")], method=method) + b"{}")
    answer = await raw_request(gw.port, data)
    assert status_of(answer) == 400, answer[:200]
    if target.startswith("/"):  # (a target that is not origin-form is already the parser's 400)
        assert "fragment" in envelope_of(answer)["message"]
    assert up.requests == []
    assert up.connections == 0
    await settled(gw.app, before)


async def test_an_encoded_hash_in_the_query_is_data_and_passes_as_sent(recording_upstream: RecordingUpstreamFactory,
                                                                       gateway_factory: GatewayFactory) -> None:
    up = await recording_upstream()
    gw = await gateway_factory(one_service(up))
    answer = await raw_request(gw.port, request_bytes("/api/v1/svc/x?tag=%23blue"))
    assert status_of(answer) == 200
    assert up.requests[-1].target == "/x?tag=%23blue"


# -- failed authentications per network, tokens need a subject -----------------------------------

SECRET = "test-trust-hmac-secret-of-a-decent-length"
ISSUERS = [{"issuer": "t", "algorithms": ["HS256"], "secret": SECRET}]


def token(**kw: Any) -> str:
    claims: dict[str, Any] = {"iss": "t", "sub": "u1", "exp": int(time.time()) + 300}
    claims.update(kw)
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, SECRET, algorithm="HS256")


async def call(gw: Gateway, client: str, credential: str | None) -> bytes:
    headers: list[tuple[str, str | bytes]] = [("X-Forwarded-For", client)]
    if credential is not None:
        headers.append(("Authorization", f"Bearer {credential}"))
    return await raw_request(gw.port, request_bytes("/api/v1/svc/x", headers))


async def test_an_attacker_rotating_addresses_inside_one_ipv6_64_is_blocked(
        recording_upstream: RecordingUpstreamFactory, gateway_factory: GatewayFactory) -> None:
    up = await recording_upstream()
    gw = await gateway_factory(one_service(up), trusted_proxies=1,
                               auth={"issuers": ISSUERS, "failure_limit": {"requests": 3, "window_s": 60}})
    for client in ("2001:db8:7:7::1", "2001:db8:7:7::2", "2001:db8:7:7:dead:beef:0:1"):
        assert status_of(await call(gw, client, token(exp=1))) == 401
    assert status_of(await call(gw, "2001:db8:7:7:ffff:ffff:ffff:fffe", token())) == 429
    assert status_of(await call(gw, "2001:db8:7:8::1", token())) == 200  # the next /64 is another caller
    assert status_of(await call(gw, "2001:db8:7:7::9", None)) == 200  # no credentials: not an attempt


async def test_an_ipv4_address_pays_the_same_as_its_ipv4_mapped_spelling(recording_upstream: RecordingUpstreamFactory,
                                                                         gateway_factory: GatewayFactory) -> None:
    up = await recording_upstream()
    gw = await gateway_factory(one_service(up), trusted_proxies=1,
                               auth={"issuers": ISSUERS, "failure_limit": {"requests": 2, "window_s": 60}})
    assert status_of(await call(gw, "198.51.100.20", token(exp=1))) == 401
    assert status_of(await call(gw, "::ffff:198.51.100.20", token(exp=1))) == 401
    assert status_of(await call(gw, "198.51.100.20", token())) == 429
    assert status_of(await call(gw, "198.51.100.21", token())) == 200  # IPv4 is per address


@pytest.mark.parametrize("sub", [None, ""])
async def test_a_token_without_a_subject_is_a_401_that_never_reaches_the_upstream(
        recording_upstream: RecordingUpstreamFactory, gateway_factory: GatewayFactory, sub: str | None) -> None:
    up = await recording_upstream()
    gw = await gateway_factory(one_service(up, auth=AuthPolicy(mode="jwt")), trusted_proxies=1,
                               auth={"issuers": ISSUERS})
    answer = await call(gw, "198.51.100.30", token(sub=sub, org_id="acme"))
    assert status_of(answer) == 401
    assert envelope_of(answer)["message"] == "The token has no subject"
    assert up.requests == []
    assert status_of(await call(gw, "198.51.100.30", token())) == 200
    assert up.requests[-1].header("x-vocelio-user") == ["u1"]


HOSTILE = 'a"}\n{"forged": true, "x": "\u2028\\\x00\xff\u00e9'


async def test_every_logged_field_is_escaped_whatever_it_holds(recording_upstream: RecordingUpstreamFactory,
                                                               gateway_factory: GatewayFactory) -> None:
    # Fields the pipeline validates today (request id, client address, service, upstream) are
    # escaped all the same: the log stays one object per line if a validation ever loosens.
    up = await recording_upstream()
    sink = io.BytesIO()
    gw = await gateway_factory(one_service(up), access_log_sink=sink, access_log=True)
    handler = gateway_handler(gw.app)
    ex = Exchange(HOSTILE, "/p" + HOSTILE + "?token=secret", "1.1", [], {}, HOSTILE, False, None, None, False)
    ex.request_id = ex.client_ip = ex.service_label = ex.upstream = HOSTILE
    ex.status = 200
    handler._record(ex, 0.001)
    gw.app[keys.ACCESS_LOG].flush()
    lines = sink.getvalue().decode("ascii").splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert set(entry) == LOG_FIELDS
    assert "forged" not in entry
    assert entry["path"] == "/p" + HOSTILE  # the query, where clients put tokens, is never logged
    for name in ("request_id", "method", "service", "upstream", "client"):
        assert entry[name] == HOSTILE, name


async def test_quotes_and_odd_bytes_in_the_path_are_logged_escaped(recording_upstream: RecordingUpstreamFactory,
                                                                   gateway_factory: GatewayFactory) -> None:
    up = await recording_upstream()
    sink = io.BytesIO()
    gw = await gateway_factory(one_service(up), access_log_sink=sink, access_log=True)
    await raw_request(gw.port, b'GET /api/v1/svc/a"b\\c{}<|^` HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n')
    await poll(lambda: gw.app[keys.METRICS].in_flight_count == 0, "the request ended")
    gw.app[keys.ACCESS_LOG].flush()
    (line,) = sink.getvalue().decode("ascii").splitlines()
    assert json.loads(line)["path"] == '/api/v1/svc/a"b\\c{}<|^`'
