"""Attack findings (helper "attack") on trust inputs: forwarded client addresses
and token claims. Each test asserts the correct behaviour (the xfail marks
went with the fix)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import time

import pytest

from tests.harness.app_fixtures import GatewayFactory, poll, service
from tests.harness.hostile import RecordingUpstreamFactory, raw_request, status_of
from tests.harness.trust_tools import request_bytes
from vocelio_contract.config import GatewayConfig
from vocelio_proxy.lifecycle import appkeys as keys
from vocelio_proxy.policy.auth.identity import AuthError
from vocelio_proxy.policy.auth.tokens import verify_token
from vocelio_proxy.policy.forwarded_headers import ForwardedTrust
from vocelio_proxy.settings import AuthSettings, JwtIssuer

# An IPv6 zone id is free text to Python's ipaddress (anything but '%' and '/').
# No comma: X-Forwarded-For is split on commas before each entry is parsed.
FORGED = 'fe80::1%x"}{"forged":"1'
ZONED = ["fe80::1%eth0", FORGED, "::1%x y", "fe80::1%{}"]


@pytest.mark.parametrize("entry", ZONED)
def test_an_x_forwarded_for_entry_with_a_zone_id_is_not_a_client_address(entry: str) -> None:
    trust = ForwardedTrust(1)
    assert trust.client("127.0.0.1", entry) == "127.0.0.1"  # not an IP address: the walk ends at the peer


async def test_a_forged_zone_id_never_reaches_the_upstream_as_the_client_address(
        recording_upstream: RecordingUpstreamFactory, gateway_factory: GatewayFactory) -> None:
    up = await recording_upstream()
    gw = await gateway_factory(GatewayConfig(services=[service("svc", up.endpoint(),
                                                               health_check={"enabled": False})]),
                               trusted_proxies=1)
    answer = await raw_request(gw.port, request_bytes("/api/v1/svc/x", [("X-Forwarded-For", FORGED)]))
    assert status_of(answer) == 200
    assert up.requests[0].header("x-forwarded-for") == ["127.0.0.1"]


async def test_every_access_log_line_is_one_json_object_whatever_the_forwarded_address(
        recording_upstream: RecordingUpstreamFactory, gateway_factory: GatewayFactory) -> None:
    up = await recording_upstream()
    sink = io.BytesIO()
    gw = await gateway_factory(GatewayConfig(services=[service("svc", up.endpoint(),
                                                               health_check={"enabled": False})]),
                               access_log_sink=sink, access_log=True, trusted_proxies=1)
    await raw_request(gw.port, request_bytes("/api/v1/svc/x", [("X-Forwarded-For", FORGED)]))
    await poll(lambda: gw.app[keys.METRICS].in_flight_count == 0, "the request ended")
    gw.app[keys.ACCESS_LOG].flush()
    lines = sink.getvalue().decode().splitlines()
    assert lines
    for line in lines:
        entry = json.loads(line)  # exactly one JSON object per line
        assert "forged" not in entry


SECRET = "attack-hmac-secret-of-a-reasonable-length!!"
SETTINGS = AuthSettings(issuers=[JwtIssuer(issuer="iss", algorithms=["HS256"], secret=SECRET)])


def hs_token(claims: str) -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
    header = b64(b'{"alg":"HS256"}')
    signing = f"{header}.{b64(claims.encode())}"
    sig = hmac.new(SECRET.encode(), signing.encode(), hashlib.sha256).digest()
    return f"{signing}.{b64(sig)}"


@pytest.mark.parametrize("claim", ['"exp":"{exp}"', '"exp":{exp},"nbf":"0"', '"exp":{exp},"iat":"0"'])
def test_a_time_claim_that_is_not_a_json_number_is_refused(claim: str) -> None:
    exp = int(time.time()) + 300
    token = hs_token('{"iss":"iss","sub":"u",' + claim.replace("{exp}", str(exp)) + "}")
    with pytest.raises(AuthError):
        verify_token(token, SETTINGS, lambda issuer, kid: None, time.time())
