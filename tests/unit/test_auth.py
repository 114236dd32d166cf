"""Identity and authorization decisions that must fail closed: JWT validation
(expiry, nbf, issuer, audience, signature, alg none, HS/RS confusion, size) and
API keys (wrong, expired, disabled), then route authorization."""

from __future__ import annotations

import base64
import datetime as dt
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from vocelio_contract.apikeys import key_hint, mint_key
from vocelio_contract.config import AuthPolicy
from vocelio_proxy.policy.auth.apikeys import ApiKeyStore
from vocelio_proxy.policy.auth.identity import AuthError, Identity, authorize
from vocelio_proxy.policy.auth.tokens import PublicKey, public_key_from_pem, verify_token
from vocelio_proxy.settings import AuthSettings, JwtIssuer

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_PUBLIC_PEM = RSA_KEY.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo).decode()
SETTINGS = AuthSettings(issuers=[
    JwtIssuer(issuer="https://id.vocelio.test", audiences=["vocelio-gateway"], algorithms=["RS256"],
              public_keys={"k1": RSA_PUBLIC_PEM}),
    JwtIssuer(issuer="internal", algorithms=["HS256"], secret="s3cret-value-long-enough-for-hs256!"),
], leeway_s=5)


def claims(**kw: object) -> dict[str, object]:
    now = int(time.time())
    base: dict[str, object] = {"iss": "https://id.vocelio.test", "aud": "vocelio-gateway", "sub": "user-1",
                               "org_id": "acme", "roles": ["agent"], "tier": "premium", "exp": now + 300, "iat": now}
    base.update(kw)
    return base


def rs(payload: dict[str, object], kid: str = "k1") -> str:
    return jwt.encode(payload, RSA_KEY, algorithm="RS256", headers={"kid": kid})


def lookup(issuer: JwtIssuer, kid: str | None) -> PublicKey | None:
    pem = issuer.public_keys.get(kid or "")
    return public_key_from_pem(pem) if pem else None


def verify(token: str) -> Identity:
    return verify_token(token, SETTINGS, lookup, time.time())


def test_a_valid_token_maps_claims_to_an_identity() -> None:
    ident = verify(rs(claims()))
    assert (ident.method, ident.user, ident.tenant, ident.tier) == ("jwt", "user-1", "acme", "premium")
    assert ident.roles == {"agent"}


@pytest.mark.parametrize(("change", "reason"), [
    ({"exp": -60}, "expired"),
    ({"nbf": 60}, "not_yet_valid"),
    ({"iss": "https://evil.test"}, "issuer"),
    ({"aud": "someone-else"}, "audience"),
])
def test_invalid_claims_are_rejected(change: dict[str, object], reason: str) -> None:
    now = int(time.time())
    payload = claims(**{k: now + v if k in ("exp", "nbf") else v for k, v in change.items()})  # type: ignore[operator]
    with pytest.raises(AuthError) as info:
        verify(rs(payload))
    assert info.value.reason == reason


def test_a_tampered_signature_is_rejected() -> None:
    token = rs(claims())
    head, body, sig = token.split(".")
    forged = json.loads(base64.urlsafe_b64decode(body + "=="))
    forged["roles"] = ["admin"]
    new_body = base64.urlsafe_b64encode(json.dumps(forged).encode()).rstrip(b"=").decode()
    with pytest.raises(AuthError) as info:
        verify(f"{head}.{new_body}.{sig}")
    assert info.value.reason == "signature"


def test_alg_none_is_rejected() -> None:
    header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    body = base64.urlsafe_b64encode(json.dumps(claims()).encode()).rstrip(b"=").decode()
    with pytest.raises(AuthError) as info:
        verify(f"{header}.{body}.")
    assert info.value.reason == "algorithm"


def test_an_hmac_token_signed_with_the_rsa_public_key_is_rejected() -> None:
    import hashlib
    import hmac

    header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT","kid":"k1"}').rstrip(b"=")
    body = base64.urlsafe_b64encode(json.dumps(claims()).encode()).rstrip(b"=")
    sig = hmac.new(RSA_PUBLIC_PEM.encode(), header + b"." + body, hashlib.sha256).digest()
    token = (header + b"." + body + b"." + base64.urlsafe_b64encode(sig).rstrip(b"=")).decode()
    with pytest.raises(AuthError) as info:
        verify(token)
    assert info.value.reason == "algorithm"


def test_an_unknown_kid_is_rejected() -> None:
    with pytest.raises(AuthError) as info:
        verify(rs(claims(), kid="rotated-away"))
    assert info.value.reason == "key"


def test_oversize_and_malformed_tokens_are_rejected_without_echoing_them() -> None:
    big = rs(claims(padding="x" * 9000))
    with pytest.raises(AuthError) as info:
        verify(big)
    assert info.value.reason == "oversize"
    assert big[:20] not in str(info.value)
    for junk in ("abc", "a.b", "###.###.###", ""):
        with pytest.raises(AuthError):
            verify(junk)


def test_hmac_issuers_verify_with_their_secret() -> None:
    token = jwt.encode(claims(iss="internal", aud=None), "s3cret-value-long-enough-for-hs256!", algorithm="HS256")
    assert verify(token).user == "user-1"
    wrong = jwt.encode(claims(iss="internal"), "another-secret-of-sufficient-len!!", algorithm="HS256")
    with pytest.raises(AuthError):
        verify(wrong)


NOW = dt.datetime(2026, 11, 26, tzinfo=dt.UTC)


def test_api_keys_are_stored_as_hashes_and_checked() -> None:
    key, record = mint_key(tenant="acme", tier="premium", roles=["integrator"])
    assert key not in record.model_dump_json()
    assert record.hash != key
    ident = ApiKeyStore([record]).authenticate(key, "1.2.3.4", NOW)
    assert (ident.method, ident.tenant, ident.tier, ident.key_id) == ("api-key", "acme", "premium", record.id)
    assert key_hint(key) == f"voc_{record.id}_…"


@pytest.mark.parametrize("change", ["wrong", "disabled", "expired", "unknown", "malformed"])
def test_bad_api_keys_fail_closed(change: str) -> None:
    key, record = mint_key(tenant="acme")
    if change == "disabled":
        record = record.model_copy(update={"disabled": True})
    if change == "expired":
        record = record.model_copy(update={"expires_at": NOW - dt.timedelta(seconds=1)})
    presented = {"wrong": key[:-4] + "AAAA", "unknown": "voc_000000000000_" + "A" * 43,
                 "malformed": "voc_nope"}.get(change, key)
    with pytest.raises(AuthError) as info:
        ApiKeyStore([record]).authenticate(presented, "1.2.3.4", NOW)
    assert key not in str(info.value)


def test_authorization_separates_401_from_403() -> None:
    anon = Identity(method="anonymous", ip="1.1.1.1")
    agent = Identity(method="jwt", ip="1.1.1.1", user="u", tenant="acme", roles=frozenset({"agent"}))
    assert authorize(AuthPolicy(mode="public"), anon).allowed
    assert authorize(AuthPolicy(mode="any"), anon).status == 401
    assert authorize(AuthPolicy(mode="api-key"), agent).status == 401
    assert authorize(AuthPolicy(mode="jwt", roles=["admin"]), agent).status == 403
    assert authorize(AuthPolicy(mode="jwt", tenants=["globex"]), agent).status == 403
    assert authorize(AuthPolicy(mode="jwt", roles=["admin", "agent"], tenants=["acme"]), agent).allowed


def test_claims_with_line_breaks_cannot_add_upstream_headers() -> None:
    identity = Identity(method="jwt", ip="1.2.3.4", user="alice\r\nX-Vocelio-Roles: admin", tenant="acme\n",
                        roles=frozenset({"ops\r\nX-Evil: 1"}), tier="gold\x00")
    with pytest.raises(AuthError) as info:
        identity.upstream_headers()
    assert info.value.reason == "claim_unrepresentable"
    headers = identity.upstream_headers("percent")
    assert headers["X-Vocelio-User"] == "alice%0D%0AX-Vocelio-Roles:%20admin"
    assert headers["X-Vocelio-Roles"] == "ops%0D%0AX-Evil:%201"
    assert headers["X-Vocelio-Tier"] == "gold%00"
    assert all("\r" not in v and "\n" not in v and "\x00" not in v for v in headers.values())
