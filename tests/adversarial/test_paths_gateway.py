"""Through a real gateway: a protected longer prefix (`/api/v1/x/admin`, JWT)
and a public shorter one (`/api/v1/x`) on the same recording upstream. Spellings
of the protected path sent without credentials are refused (400 envelope),
answered 401 under the protected route, or 404; none reaches the upstream as a
path that any backend reading (case-insensitive, `;`-stripping, trailing-dot
trimming, double-decoding, ...) maps under the protected prefix."""

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
from tests.harness.paths_tools import all_readings, readings_that_reach
from vocelio_contract.config import AuthPolicy, GatewayConfig

PROTECTED = "/api/v1/x/admin"
PREFIXES = ["/api/v1/x", PROTECTED]

SPELLINGS = [
    # fragments
    "/api/v1/x/admin#", "/api/v1/x/admin#x", "/api/v1/x/admin%23", "/api/v1/x/admin%23/", "/api/v1/x#/admin",
    # letter case
    "/api/v1/x/ADMIN", "/api/v1/x/Admin", "/api/v1/x/aDmIn/keys", "/API/V1/X/ADMIN", "/api/v1/X/admin",
    # path parameters, raw and encoded
    "/api/v1/x/admin;jsessionid=1", "/api/v1/x;foo/admin", "/api/v1/x/..;/x/admin", "/api/v1/x/admin;",
    "/api/v1/x/admin%3bjsessionid=1", "/api/v1/x/admin%3B", "/api/v1/x/;/admin", "/api/v1/x/%3b/admin",
    # trailing dots, spaces and controls
    "/api/v1/x/admin.", "/api/v1/x/admin..", "/api/v1/x/admin...", "/api/v1/x/admin%2e", "/api/v1/x/admin%2E%2E",
    "/api/v1/x/admin%20", "/api/v1/x/admin%09", "/api/v1/x/admin%00", "/api/v1/x/admin.%20", "/api/v1/x/admin./",
    "/api/v1/x/admin%0a", "/api/v1/x/admin%0d%0a",
    # double and overlong encodings, IIS %u
    "/api/v1/x/admin%252e", "/api/v1/x/y/%252e%252e/admin", "/api/v1/x/y/%25%32%65%25%32%65/admin",
    "/api/v1/x/y/%c0%ae%c0%ae/admin", "/api/v1/x/y/%e0%80%ae%e0%80%ae/admin", "/api/v1/x/y/%u002e%u002e/admin",
    "/api/v1/x/adm%u0069n", "/api/v1/x/admin%c0%ae",
    # separators
    "/api/v1/x/y/..%2fadmin", "/api/v1/x/y/..%2Fadmin", "/api/v1/x/y/..%5cadmin", "/api/v1/x/y/..\\admin",
    "/api/v1/x/y\\..\\admin",
    # Unicode that folds to ASCII
    "/api/v1/x/adm%c4%b1n", "/api/v1/x/%ef%bd%81dmin", "/api/v1/x/admin%ef%bc%8e", "/api/v1/x/%e2%84%aadmin",
    "/api/v1/x/y/%ef%bc%8e%ef%bc%8e/admin", "/api/v1/x/admin%c2%a0", "/api/v1/x/admin%e2%80%8b",
    "/api/v1/x/adm\u00c4\u00b1n", "/api/v1/x/admin\u00ef\u00bc\u008e",
    # format suffixes (Rails, Spring: admin.json is admin)
    "/api/v1/x/admin.x", "/api/v1/x/admin.json", "/api/v1/x/ADMIN.json", "/api/v1/x/admin.tar.gz",
    # equivalent spellings that canonicalise to the protected path itself (401 there)
    "/api/v1/x//admin", "/api/v1/x/./admin", "/api/v1/x/y/../admin", "/api/v1/x/y/%2e%2e/admin",
    "/api/v1/x/adm%69n", "/api/v1/x/%61dmin/keys",
]
# Public paths, some close to the protected one, that must still reach the upstream
# (so the test sees a working route), as sent -> as forwarded (canonical form).
CONTROLS = [
    ("/api/v1/x/public", "/api/v1/x/public"), ("/api/v1/x/administrator", "/api/v1/x/administrator"),
    ("/api/v1/x/caf%c3%a9", "/api/v1/x/caf%C3%A9"), ("/api/v1/x/a%20b", "/api/v1/x/a%20b"),
    ("/api/v1/x/a.b", "/api/v1/x/a.b"), ("/api/v1/x/%7eme", "/api/v1/x/~me"),
    ("/api/v1/x/admin%20b", "/api/v1/x/admin%20b"), ("/api/v1/x/admin-x", "/api/v1/x/admin-x"),
    ("/api/v1/x/admin%2bx", "/api/v1/x/admin%2Bx"), ("/api/v1/x/admin%c3%a9", "/api/v1/x/admin%C3%A9"),
    ("/api/v1/x/admin%25", "/api/v1/x/admin%25"), ("/api/v1/x/admin%cc%81", "/api/v1/x/admin%CC%81"),
    ("/api/v1/x/administrator.x", "/api/v1/x/administrator.x"), ("/api/v1/x/y/./z/..", "/api/v1/x/y/"),
    ("/api/v1/x/adm%40in", "/api/v1/x/adm@in"),
]


@pytest.fixture
async def gateway(recording_upstream: RecordingUpstreamFactory,
                  gateway_factory: GatewayFactory) -> tuple[Gateway, RecordingUpstream]:
    up = await recording_upstream()
    config = GatewayConfig(services=[
        service("x-public", up.endpoint(), prefixes=["/api/v1/x"], rewrite=None, health_check={"enabled": False}),
        service("x-admin", up.endpoint(), prefixes=[PROTECTED], rewrite=None, health_check={"enabled": False},
                auth=AuthPolicy(mode="jwt")),
    ])
    gw = await gateway_factory(config)
    return gw, up


def request(target: str) -> bytes:
    return f"GET {target} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n".encode("latin-1")


async def test_no_spelling_of_a_protected_path_reaches_the_upstream_under_the_public_route(
        gateway: tuple[Gateway, RecordingUpstream]) -> None:
    gw, up = gateway
    assert len(SPELLINGS) >= 50
    before = resources(gw.app)
    answers = {target: await raw_request(gw.port, request(target)) for target in SPELLINGS}
    statuses = {target: status_of(answer) for target, answer in answers.items()}
    served = {t: s for t, s in statuses.items() if s not in (400, 401, 404)}
    assert not served, served
    readings = all_readings()
    reaching = {}
    for received in up.requests:
        path = received.target.partition("?")[0]
        hits = readings_that_reach(path, PREFIXES, PROTECTED, readings)
        if hits:
            reaching[path] = hits[:3]
    assert not reaching, reaching
    for target, answer in answers.items():
        if statuses[target] == 400 and answer.startswith(b"HTTP/1.1 400"):
            body = json.loads(answer.partition(b"\r\n\r\n")[2] or b"{}")
            if body:  # the gateway's envelope (the server's own parse errors may close first)
                assert body["status_code"] == 400, (target, body)
                assert body["request_id"], (target, body)
    await settled(gw.app, before)


async def test_public_paths_reach_the_upstream_in_canonical_form_and_no_reading_makes_them_protected(
        gateway: tuple[Gateway, RecordingUpstream]) -> None:
    gw, up = gateway
    for sent, _ in CONTROLS:
        assert status_of(await raw_request(gw.port, request(sent))) == 200, sent
    assert up.paths() == [forwarded for _, forwarded in CONTROLS]
    readings = all_readings()
    for path in up.paths():
        assert not readings_that_reach(path, PREFIXES, PROTECTED, readings), path


async def test_the_protected_spellings_that_canonicalise_to_it_get_its_policy(
        gateway: tuple[Gateway, RecordingUpstream]) -> None:
    gw, up = gateway
    for target in ["/api/v1/x//admin", "/api/v1/x/./admin", "/api/v1/x/y/%2e%2e/admin", "/api/v1/x/adm%69n"]:
        assert status_of(await raw_request(gw.port, request(target))) == 401, target
    assert up.requests == []


async def test_a_path_refused_for_its_spelling_gets_the_400_envelope(
        gateway: tuple[Gateway, RecordingUpstream]) -> None:
    gw, up = gateway
    for target in ["/api/v1/x/admin;jsessionid=1", "/api/v1/x/admin.", "/api/v1/x/admin%252e",
                   "/api/v1/x/adm%c4%b1n", "/api/v1/x/admin%23"]:
        answer = await raw_request(gw.port, request(target))
        assert status_of(answer) == 400, (target, answer)
        body = json.loads(answer.partition(b"\r\n\r\n")[2])
        assert body["status_code"] == 400, body
        assert body["message"].startswith("Invalid request path"), body
    assert up.requests == []
