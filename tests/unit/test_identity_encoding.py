"""The claim encoding policy for identity headers, the same for tokens and API
keys: `refuse` writes printable ASCII as it is and refuses anything else;
`percent` percent-encodes UTF-8 so every value is printable ASCII and decodes
back to itself. The identity headers are exactly the documented set."""

from __future__ import annotations

import datetime as dt
import urllib.parse

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vocelio_contract.apikeys import mint_key
from vocelio_proxy.policy.auth.apikeys import ApiKeyStore
from vocelio_proxy.policy.auth.identity import IDENTITY_HEADERS, AuthError, Identity, identity_headers, percent_encode


def ident(**kw: object) -> Identity:
    base: dict[str, object] = {"method": "jwt", "ip": "1.2.3.4", "user": "u1"}
    base.update(kw)
    return Identity(**base)  # type: ignore[arg-type]


def refused(identity: Identity) -> bool:
    try:
        identity_headers(identity, "refuse")
    except AuthError as exc:
        # Refusing is one of two allowed outcomes here, so the check is on the caught error.
        assert exc.reason == "claim_unrepresentable"  # noqa: PT017
        assert str(exc).endswith("not representable in a header")  # noqa: PT017
        return True
    return False


def test_the_identity_headers_are_exactly_the_documented_set() -> None:
    full = ident(tenant="acme", roles=frozenset({"agent", "ops"}), tier="gold")
    assert tuple(identity_headers(full, "refuse")) == IDENTITY_HEADERS
    assert identity_headers(full, "refuse")["X-Vocelio-Roles"] == "agent,ops"
    assert identity_headers(Identity(method="anonymous", ip="1.2.3.4"), "refuse") == {
        "X-Vocelio-Auth-Method": "anonymous"}
    assert identity_headers(ident(user=None, tenant="", roles=frozenset({""})), "refuse") == {
        "X-Vocelio-Auth-Method": "jwt"}  # empty values are absent values


@pytest.mark.parametrize("value", ["alice", "John Smith", "a:b/c@d?e=f&g", "~!#$^*()[]{}|;'<>`\"\\", "100%", "a,b"])
def test_refuse_writes_printable_ascii_as_it_is(value: str) -> None:
    assert identity_headers(ident(user=value, tenant=value), "refuse")["X-Vocelio-User"] == value


@pytest.mark.parametrize("value", ["\u0141ukasz", "caf\u00e9", " lead", "trail ", "a\r\nX-Evil: 1", "nul\x00",
                                   "tab\tin", "del\x7f", "\u2028", "\U0001f600"])
def test_refuse_refuses_values_a_header_cannot_hold_as_they_are(value: str) -> None:
    for field in ("user", "tenant", "tier"):
        assert refused(ident(**{field: value})), (field, value)
    assert refused(ident(roles=frozenset({value})))


@pytest.mark.parametrize("role", ["a,b", ",admin", "admin,"])
def test_a_role_holding_the_list_separator_is_refused(role: str) -> None:
    assert refused(ident(roles=frozenset({role, "agent"})))
    assert identity_headers(ident(roles=frozenset({role})), "percent")["X-Vocelio-Roles"] == role.replace(",", "%2C")


@pytest.mark.parametrize(("value", "encoded"), [
    ("\u0141ukasz", "%C5%81ukasz"), ("caf\u00e9", "caf%C3%A9"), ("100%", "100%25"), ("a,b", "a%2Cb"),
    ("John Smith", "John%20Smith"), ("a\r\nb", "a%0D%0Ab"), ("plain-ascii_1.2~", "plain-ascii_1.2~"),
])
def test_percent_encodes_utf8_and_its_own_reserved_characters(value: str, encoded: str) -> None:
    assert identity_headers(ident(user=value), "percent")["X-Vocelio-User"] == encoded


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=40))
def test_percent_encoding_is_printable_ascii_and_decodes_to_the_value(value: str) -> None:
    encoded = percent_encode(value)
    assert all(0x21 <= ord(c) < 0x7F for c in encoded)
    assert "," not in encoded
    assert urllib.parse.unquote(encoded) == value


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=40), st.frozensets(st.text(max_size=10), max_size=4))
def test_refuse_either_keeps_a_value_exactly_or_refuses_it(value: str, roles: frozenset[str]) -> None:
    identity = ident(user=value, tenant=value, tier=value, roles=roles)
    try:
        headers = identity_headers(identity, "refuse")
    except AuthError:
        return
    if value:
        assert headers["X-Vocelio-User"] == value == headers["X-Vocelio-Tenant"] == headers["X-Vocelio-Tier"]
    for header_value in headers.values():
        header_value.encode("ascii")
        assert header_value == header_value.strip()
        assert not any(c in header_value for c in "\r\n\x00")
    kept = {r for r in roles if r}
    if kept:
        assert set(headers["X-Vocelio-Roles"].split(",")) == kept


def test_api_key_identities_follow_the_same_policy() -> None:
    key, record = mint_key(tenant="\u00c5ngstr\u00f6m AB", tier="gold", roles=["ops,admin"])
    identity = ApiKeyStore([record]).authenticate(key, "1.2.3.4", dt.datetime(2030, 1, 1, tzinfo=dt.UTC))
    assert refused(identity)
    headers = identity_headers(identity, "percent")
    assert headers["X-Vocelio-Tenant"] == "%C3%85ngstr%C3%B6m%20AB"
    assert headers["X-Vocelio-Roles"] == "ops%2Cadmin"
    assert headers["X-Vocelio-User"] == f"apikey:{record.id}"
