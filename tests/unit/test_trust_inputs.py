"""Trust inputs the attacker found loose, as tables and generated inputs, no sockets:
the client address from X-Forwarded-For is a plain, canonical IP address or the
walk stops (zone ids and every other spelling `ipaddress` tolerates are not
addresses); token time claims are JSON numbers; a JWT names its user; failed
authentications count per IPv4 address and per IPv6 /64."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vocelio_proxy.pipeline.edge import failure_key
from vocelio_proxy.policy.auth.identity import AuthError, Identity
from vocelio_proxy.policy.auth.tokens import verify_token
from vocelio_proxy.policy.forwarded_headers import ForwardedTrust
from vocelio_proxy.settings import AuthSettings, ClaimNames, JwtIssuer

PEER = "10.0.0.9"


def canonical(text: str) -> bool:
    try:
        return str(ipaddress.ip_address(text)) == text and "%" not in text
    except ValueError:
        return False


@pytest.mark.parametrize("entry", [
    "fe80::1%eth0", "fe80::1%25eth0", "::1%x y", "fe80::1%{}", 'fe80::1%x"}{"a":"1', "fe80::1%", "::1%0",
    "2001:db8::1%\u2028", "[::1]", "1.2.3.4:80", "1.2.3.4/32", "01.2.3.4", "1.2.3", "0x7f.0.0.1", "unknown", "",
])
def test_an_entry_that_is_not_a_plain_address_ends_the_walk_at_the_nearest_address(entry: str) -> None:
    for hops, cidrs in ((1, ()), (3, ()), (3, ("10.0.0.0/8", "fe80::/10", "::1/128"))):
        trust = ForwardedTrust(hops, cidrs)
        assert trust.client(PEER, entry) == PEER
        assert trust.client(PEER, f"203.0.113.5, {entry}") == PEER
        if hops > 1:
            assert trust.client(PEER, f"{entry}, 10.1.1.1") == "10.1.1.1"


def test_a_link_local_peer_is_matched_against_the_cidrs_without_its_zone() -> None:
    # The peer's zone comes from the kernel (getpeername), not from the client.
    trust = ForwardedTrust(2, ("fe80::/10",))
    assert trust.peer_trusted("fe80::1%eth0")
    assert trust.client("fe80::1%eth0", "203.0.113.5") == "203.0.113.5"
    assert not ForwardedTrust(2, ("10.0.0.0/8",)).peer_trusted("fe80::1%eth0")


@pytest.mark.parametrize(("entry", "client"), [
    ("2001:DB8:0:0:0:0:0:1", "2001:db8::1"), ("2001:db8::0001", "2001:db8::1"), ("::ffff:203.0.113.7", "203.0.113.7"),
    ("::FFFF:cb00:7107", "203.0.113.7"), (" 203.0.113.7 ", "203.0.113.7"),
])
def test_the_client_address_is_canonical_whatever_its_spelling(entry: str, client: str) -> None:
    assert ForwardedTrust(1).client(PEER, entry) == client


@given(st.lists(st.text(st.characters(codec="utf-8", exclude_characters=","), max_size=40), min_size=1,
                max_size=5), st.integers(1, 4))
def test_any_forwarded_for_gives_the_peer_or_a_canonical_plain_address(entries: list[str], hops: int) -> None:
    client = ForwardedTrust(hops).client(PEER, ",".join(entries))
    assert client == PEER or canonical(client)


# -- time claims and the subject -------------------------------------------------------

SECRET = "test-hmac-secret-of-a-reasonable-length!!!"
SETTINGS = AuthSettings(issuers=[JwtIssuer(issuer="iss", algorithms=["HS256"], secret=SECRET)])


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


HEADER = b64(b'{"alg":"HS256"}')


def hs_token(claims: str) -> str:
    """A token signed with the issuer's secret whose claims are exactly `claims` (raw JSON)."""
    signing = f"{HEADER}.{b64(claims.encode())}"
    return f"{signing}.{b64(hmac.new(SECRET.encode(), signing.encode(), hashlib.sha256).digest())}"


def verify(claims: str, settings: AuthSettings = SETTINGS) -> Identity:
    return verify_token(hs_token(claims), settings, lambda issuer, kid: None, time.time())


# Far enough ahead that a long suite never reaches it (computed at import time).
EXP = int(time.time()) + 365 * 86400
NOT_NUMBERS = ['"1700000000"', '"0"', '""', "true", "false", "null", "[1]", '{"n":1}', "1e400", "-1e400"]


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
@pytest.mark.parametrize("value", NOT_NUMBERS)
def test_a_time_claim_that_is_not_a_finite_json_number_is_refused(claim: str, value: str) -> None:
    claims = {"exp": str(EXP), "nbf": "0", "iat": "0"}
    claims[claim] = value
    body = ",".join(f'"{k}":{v}' for k, v in claims.items())
    with pytest.raises(AuthError) as caught:
        verify('{"iss":"iss","sub":"u",' + body + "}")
    assert caught.value.reason == "malformed"
    assert f"{claim} claim is not a number" in str(caught.value)


@pytest.mark.parametrize("times", [f'"exp":{EXP}', f'"exp":{EXP}.5,"nbf":0.5,"iat":1', f'"exp":{EXP},"iat":-1'])
def test_integer_and_float_time_claims_are_accepted(times: str) -> None:
    assert verify('{"iss":"iss","sub":"u",' + times + "}") is not None


@pytest.mark.parametrize(("subject", "message"), [
    ("", "The token has no subject"),
    (',"sub":""', "The token has no subject"),
    (',"sub":null', "The token's sub or jti claim is not a string"),  # PyJWT's own check, same 401
])
def test_a_token_without_a_subject_is_refused(subject: str, message: str) -> None:
    with pytest.raises(AuthError) as caught:
        verify('{"iss":"iss","exp":' + str(EXP) + subject + "}")
    assert str(caught.value) == message
    assert caught.value.reason == "claims"


def test_the_user_claim_is_the_configured_one() -> None:
    custom = SETTINGS.model_copy(update={"claims": ClaimNames(user="uid")})
    identity = verify('{"iss":"iss","exp":' + str(EXP) + ',"uid":"u7"}', custom)
    assert identity.user == "u7"
    with pytest.raises(AuthError, match="no subject"):
        verify('{"iss":"iss","exp":' + str(EXP) + ',"sub":"u7"}', custom)


# -- who pays for a failed authentication ----------------------------------------------------

@pytest.mark.parametrize(("ip", "key"), [
    ("203.0.113.7", "203.0.113.7"),
    ("::ffff:203.0.113.7", "203.0.113.7"),
    ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
    ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
    ("::1", "::/64"),
])
def test_failures_count_per_ipv4_address_and_per_ipv6_64(ip: str, key: str) -> None:
    assert failure_key(ip) == key


@given(st.integers(0, 2**128 - 1), st.integers(0, 2**64 - 1))
def test_every_address_of_an_ipv6_64_pays_into_one_key(address: int, other_host: int) -> None:
    addr = ipaddress.IPv6Address(address)
    if addr.ipv4_mapped is not None:
        assert failure_key(str(addr)) == str(addr.ipv4_mapped)
        return
    sibling = ipaddress.IPv6Address((address >> 64 << 64) | other_host)
    if sibling.ipv4_mapped is None:
        assert failure_key(str(addr)) == failure_key(str(sibling))
    neighbour = ipaddress.IPv6Address(address ^ (1 << 64))
    if neighbour.ipv4_mapped is None:
        assert failure_key(str(addr)) != failure_key(str(neighbour))
