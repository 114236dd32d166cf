"""Identity headers cannot be smuggled by spelling: through a real gateway, a
client header whose name reads (lower-cased, `_` as `-`) as a header the
gateway owns never reaches the recording upstream, in any of the three
`headers_with_underscores` modes; other underscore names are dropped, refused
(400 envelope) or kept as the mode says; credentials spelled with underscores
never authenticate. The upstream receives exactly the documented gateway
headers, once each."""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.harness.app_fixtures import GatewayFactory, service
from tests.harness.hostile import (
    RecordingUpstream,
    RecordingUpstreamFactory,
    raw_request,
    resources,
    settled,
    status_of,
)
from tests.harness.trust_tools import envelope_of, request_bytes
from vocelio_contract.apikeys import mint_key
from vocelio_contract.config import GatewayConfig
from vocelio_proxy.policy.auth.identity import IDENTITY_HEADERS

SECRET = "spelling-test-hmac-secret-of-enough-length"
AUTH = {"issuers": [{"issuer": "t", "algorithms": ["HS256"], "secret": SECRET}], "failure_limit": {"requests": 0}}
OWNED = [*IDENTITY_HEADERS, "X-Vocelio-Key-Id", "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host",
         "X-Request-ID", "X-Real-IP", "Content-Length", "Transfer-Encoding", "X-API-Key", "Proxy-Authorization"]
GATEWAY_SENT = {"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-request-id", "traceparent"}


def token() -> str:
    return jwt.encode({"iss": "t", "sub": "u1", "org_id": "acme", "roles": ["agent"], "exp": int(time.time()) + 300},
                      SECRET, algorithm="HS256")


def spellings(name: str) -> list[str]:
    """Every `_`/`-` mix of `name`, each in three cases: the whole separator space."""
    parts = name.split("-")
    out: list[str] = []
    for seps in itertools.product("-_", repeat=len(parts) - 1):
        joined = parts[0] + "".join(s + p for s, p in zip(seps, parts[1:], strict=True))
        if "_" in joined:
            out.extend({joined, joined.lower(), joined.upper()})
    return out


async def gateway(recording_upstream: Any, gateway_factory: Any, **settings_: Any) -> tuple[Any, RecordingUpstream]:
    up = await recording_upstream()
    gw = await gateway_factory(GatewayConfig(services=[service("svc", up.endpoint(), health_check={"enabled": False}),
                                                       service("jwt", up.endpoint(), auth={"mode": "jwt"},
                                                               health_check={"enabled": False}),
                                                       service("keyed", up.endpoint(), auth={"mode": "api-key"},
                                                               health_check={"enabled": False})]),
                               auth=AUTH, **settings_)
    return gw, up


def assert_only_gateway_headers(received: Any, *, identity: dict[str, str]) -> None:
    names = [k.lower() for k, _ in received.headers]
    for name in GATEWAY_SENT:
        assert names.count(name) == 1, (name, received.headers)
    sent_identity = {k: v for k, v in received.headers if k.lower().startswith("x-vocelio")}
    assert sent_identity == identity, received.headers
    for k, v in received.headers:
        assert "smuggled" not in v, (k, v)


@pytest.mark.parametrize("mode", ["allow", "drop"])
async def test_no_spelling_of_an_owned_header_reaches_the_upstream(recording_upstream: RecordingUpstreamFactory,
                                                                   gateway_factory: GatewayFactory, mode: str) -> None:
    gw, up = await gateway(recording_upstream, gateway_factory, headers_with_underscores=mode)
    before = resources(gw.app)
    spelled = [(s, f"smuggled-{i}") for i, s in enumerate(s for n in OWNED for s in spellings(n))]
    assert len(spelled) > 100
    # In batches (the header count limit is 100), anonymous and authenticated.
    for start in range(0, len(spelled), 60):
        batch: list[tuple[str, str | bytes]] = list(spelled[start:start + 60])
        answer = await raw_request(gw.port, request_bytes("/api/v1/svc/x", batch))
        assert status_of(answer) == 200, answer[:300]
        assert_only_gateway_headers(up.requests[-1], identity={"X-Vocelio-Auth-Method": "anonymous"})
        answer = await raw_request(gw.port, request_bytes("/api/v1/jwt/x", [*batch, ("Authorization",
                                                                                    f"Bearer {token()}")]))
        assert status_of(answer) == 200, answer[:300]
        assert_only_gateway_headers(up.requests[-1], identity={
            "X-Vocelio-Auth-Method": "jwt", "X-Vocelio-User": "u1", "X-Vocelio-Tenant": "acme",
            "X-Vocelio-Roles": "agent"})
    await settled(gw.app, before)


@pytest.fixture
def shared() -> dict[str, Any]:
    """One gateway for all the examples of a hypothesis test."""
    return {}


OWNED_NAME = st.sampled_from([n.lower() for n in OWNED] + ["x-vocelio-anything-new"])


@st.composite
def spelled(draw: st.DrawFn) -> str:
    """An owned name with random case and at least one `-` written `_` (the real
    spellings are the gateway's to set, tested elsewhere)."""
    name = draw(OWNED_NAME)
    dashes = [i for i, c in enumerate(name) if c == "-"]
    forced = draw(st.sampled_from(dashes))
    out = []
    for i, c in enumerate(name):
        if c == "-":
            out.append("_" if i == forced else draw(st.sampled_from("-_")))
        else:
            out.append(c.upper() if draw(st.booleans()) else c)
    return "".join(out)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=st.lists(spelled(), min_size=1, max_size=8), mode=st.sampled_from(["allow", "drop"]))
async def test_generated_spellings_of_owned_headers_never_reach_the_upstream(
        recording_upstream: RecordingUpstreamFactory, gateway_factory: GatewayFactory, shared: dict[str, Any],
        names: list[str], mode: str) -> None:
    if mode not in shared:
        shared[mode] = await gateway(recording_upstream, gateway_factory, headers_with_underscores=mode)
    gw, up = shared[mode]
    headers: list[tuple[str, str | bytes]] = [(n, f"smuggled-{i}") for i, n in enumerate(names)]
    answer = await raw_request(gw.port, request_bytes("/api/v1/svc/x", headers))
    assert status_of(answer) == 200, answer[:300]
    assert_only_gateway_headers(up.requests[-1], identity={"X-Vocelio-Auth-Method": "anonymous"})


async def test_underscore_names_are_dropped_by_default(recording_upstream: RecordingUpstreamFactory,
                                                       gateway_factory: GatewayFactory) -> None:
    gw, up = await gateway(recording_upstream, gateway_factory)
    answer = await raw_request(gw.port, request_bytes("/api/v1/svc/x", [("X_Custom", "1"), ("X-Custom", "2"),
                                                                         ("Accept_Language", "de")]))
    assert status_of(answer) == 200
    assert [(k, v) for k, v in up.requests[-1].headers if "custom" in k.lower() or "language" in k.lower()] == [
        ("X-Custom", "2")]


async def test_underscore_names_are_refused_with_400_when_configured(recording_upstream: RecordingUpstreamFactory,
                                                                     gateway_factory: GatewayFactory) -> None:
    gw, up = await gateway(recording_upstream, gateway_factory, headers_with_underscores="reject")
    before = resources(gw.app)
    for name in ("X_Custom", "X_Vocelio_User", "x-vocelio_tenant", "X_API_Key", "Authorization_"):
        answer = await raw_request(gw.port, request_bytes("/api/v1/svc/x", [(name, "v")]))
        assert status_of(answer) == 400, name
        body = envelope_of(answer)
        assert body["status_code"] == 400
        assert "underscores" in body["message"]
    assert up.requests == []
    assert status_of(await raw_request(gw.port, request_bytes("/api/v1/svc/x", [("X-Custom", "ok")]))) == 200
    await settled(gw.app, before)


async def test_underscore_names_that_are_not_owned_pass_when_allowed(recording_upstream: RecordingUpstreamFactory,
                                                                     gateway_factory: GatewayFactory) -> None:
    gw, up = await gateway(recording_upstream, gateway_factory, headers_with_underscores="allow")
    answer = await raw_request(gw.port, request_bytes("/api/v1/svc/x", [("X_Custom", "1"), ("X_Vocelio_User", "a")]))
    assert status_of(answer) == 200
    sent = up.requests[-1].headers
    assert ("X_Custom", "1") in sent
    assert not [k for k, _ in sent if k.lower() == "x_vocelio_user"]


@pytest.mark.parametrize("mode", ["allow", "drop"])
async def test_credentials_spelled_with_underscores_never_authenticate(recording_upstream: RecordingUpstreamFactory,
                                                                       gateway_factory: GatewayFactory, tmp_path: Path,
                                                                       mode: str) -> None:
    key, record = mint_key(tenant="acme")
    keys_file = tmp_path / "keys.json"
    keys_file.write_text("[" + record.model_dump_json() + "]")
    gw, up = await gateway(recording_upstream, gateway_factory, headers_with_underscores=mode,
                           api_keys_path=keys_file)
    for name, value, path in (("X_API_Key", key, "/api/v1/keyed/x"), ("x_api_key", key, "/api/v1/keyed/x"),
                              ("X-API_Key", key, "/api/v1/keyed/x"),
                              ("Authorization_", f"Bearer {token()}", "/api/v1/jwt/x")):
        answer = await raw_request(gw.port, request_bytes(path, [(name, value)]))
        assert status_of(answer) == 401, (name, answer[:200])
        assert envelope_of(answer)["message"] == "Authentication required"
    # Nor do they ride along to the upstream of a public route in either mode.
    answer = await raw_request(gw.port, request_bytes("/api/v1/svc/x", [("X_API_Key", key)]))
    assert status_of(answer) == 200
    assert key not in str(up.requests[-1].headers)
    assert status_of(await raw_request(gw.port, request_bytes("/api/v1/keyed/x", [("X-API-Key", key)]))) == 200


@pytest.mark.parametrize("raw_name", [b"X-Vocelio-User ", b"X-Vocelio-User\t", b" X-Vocelio-User", b"X-Vocelio User"])
async def test_header_names_with_whitespace_are_refused_not_normalised(recording_upstream: RecordingUpstreamFactory,
                                                                       gateway_factory: GatewayFactory,
                                                                       raw_name: bytes) -> None:
    gw, up = await gateway(recording_upstream, gateway_factory, headers_with_underscores="allow")
    request = (b"GET /api/v1/svc/x HTTP/1.1\r\nHost: gw.test\r\nX-Pad: 1\r\n" + raw_name
               + b": smuggled\r\nConnection: close\r\n\r\n")
    answer = await raw_request(gw.port, request)
    assert status_of(answer) == 400, answer[:200]
    assert up.requests == []
