"""Attack findings (helper "attack") on the request target and routing: a protected
longer prefix (`/api/v1/x/admin`, JWT) and a public shorter one (`/api/v1/x`) on one
recording upstream, as in test_paths_gateway.py. Each test asserts the correct
behaviour and is marked xfail(strict) while the defect stands."""

from __future__ import annotations

import pytest

from tests.harness.app_fixtures import Gateway, GatewayFactory, service
from tests.harness.hostile import RecordingUpstream, RecordingUpstreamFactory, raw_request, status_of
from vocelio_contract.config import AuthPolicy, GatewayConfig

PROTECTED = "/api/v1/x/admin"


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


@pytest.mark.parametrize("target", ["/api/v1/x?a=1#b", "/api/v1/x?#/../admin", "/api/v1/x/?role=user#&role=admin"])
async def test_a_fragment_after_the_query_is_refused_and_never_reaches_the_upstream(
        gateway: tuple[Gateway, RecordingUpstream], target: str) -> None:
    gw, up = gateway
    answer = await raw_request(gw.port, request(target))
    assert status_of(answer) == 400
    assert up.requests == []


# Found by the attack helper: Rails routes (`(.:format)`) and Spring MVC suffix pattern matching
# (default before 5.3) serve /admin.json as /admin; fixed by `paths.format_suffix` (Router).
@pytest.mark.parametrize("target", ["/api/v1/x/admin.json", "/api/v1/x/admin.xml/", "/api/v1/x/%61dmin.html"])
async def test_a_format_suffix_on_a_protected_segment_gets_the_protected_policy_or_is_refused(
        gateway: tuple[Gateway, RecordingUpstream], target: str) -> None:
    gw, up = gateway
    answer = await raw_request(gw.port, request(target))
    assert status_of(answer) in (400, 401)
    assert up.requests == []
