"""Odd tokens are AuthErrors (401), never another exception: kids and algs of
every JSON type, key confusion on an issuer with an HMAC secret, RSA and EC
keys, malformed segments and JSON, JWS extensions, claims of the wrong type;
then generated tokens (random bytes, random header and claim JSON, correctly
signed random claims) whose only outcomes are an AuthError or an identity whose
upstream headers are printable ASCII. Also hostile JWKS documents."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from vocelio_proxy.policy.auth.identity import AuthError, Identity, identity_headers
from vocelio_proxy.policy.auth.jwks import merge_jwks
from vocelio_proxy.policy.auth.tokens import PublicKey, public_key_from_jwk, public_key_from_pem, verify_token
from vocelio_proxy.settings import AuthSettings, JwtIssuer

SECRET = "mixed-issuer-hmac-secret-of-enough-length!"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
EC384_KEY = ec.generate_private_key(ec.SECP384R1())


def pem(key: Any) -> str:
    return str(key.public_key().public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo).decode())


RSA_PEM, EC_PEM, EC384_PEM = pem(RSA_KEY), pem(EC_KEY), pem(EC384_KEY)
MIXED = JwtIssuer(issuer="mixed", algorithms=["HS256", "RS256", "PS256", "ES256", "ES384"], secret=SECRET,
                  public_keys={"rsa": RSA_PEM, "ec": EC_PEM, "ec384": EC384_PEM})
SETTINGS = AuthSettings(issuers=[MIXED], leeway_s=5)
KEYS = {kid: public_key_from_pem(text) for kid, text in MIXED.public_keys.items()}


def lookup(issuer: JwtIssuer, kid: str | None) -> PublicKey | None:
    return KEYS.get(kid) if kid is not None else None


def verify(token: str, settings: AuthSettings = SETTINGS) -> Identity:
    return verify_token(token, settings, lookup, time.time())


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs_token(header: str | bytes, claims: str | bytes, secret: str = SECRET) -> str:
    """A token from exact header and claims text, HMAC-signed over exactly those bytes."""
    h = b64(header if isinstance(header, bytes) else header.encode())
    c = b64(claims if isinstance(claims, bytes) else claims.encode())
    sig = hmac.new(secret.encode(), f"{h}.{c}".encode(), hashlib.sha256).digest()
    return f"{h}.{c}.{b64(sig)}"


def good_claims(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"iss": "mixed", "sub": "u1", "org_id": "acme", "roles": ["agent"],
                            "exp": int(time.time()) + 300}
    base.update(kw)
    return base


def reason(token: str, settings: AuthSettings = SETTINGS) -> str:
    with pytest.raises(AuthError) as info:
        verify(token, settings)
    assert token[-12:] not in str(info.value)  # never echoed
    return info.value.reason


def test_each_key_type_verifies_its_own_algorithm() -> None:
    assert verify(jwt.encode(good_claims(), SECRET, algorithm="HS256")).user == "u1"
    assert verify(jwt.encode(good_claims(), RSA_KEY, algorithm="RS256", headers={"kid": "rsa"})).user == "u1"
    assert verify(jwt.encode(good_claims(), RSA_KEY, algorithm="PS256", headers={"kid": "rsa"})).user == "u1"
    assert verify(jwt.encode(good_claims(), EC_KEY, algorithm="ES256", headers={"kid": "ec"})).user == "u1"
    assert verify(jwt.encode(good_claims(), EC384_KEY, algorithm="ES384", headers={"kid": "ec384"})).user == "u1"


@pytest.mark.parametrize("kid", [7, 7.5, True, None, [], ["rsa"], {}, {"kid": "rsa"}])
def test_a_kid_that_is_not_a_string_is_malformed(kid: Any) -> None:
    header = json.dumps({"alg": "RS256", "kid": kid})
    token = jwt.encode(good_claims(), RSA_KEY, algorithm="RS256", headers={"kid": "rsa"})
    forged = f"{b64(header.encode())}.{token.split('.', 1)[1]}"
    if kid is None:  # JSON null is an absent kid: no key is named, so none is found
        assert reason(forged) == "key"
    else:
        assert reason(forged) == "malformed"


@pytest.mark.parametrize("kid", ["rsa", "ec", "ec384"])
def test_an_hmac_token_whose_kid_names_a_public_key_is_refused_even_when_signed_with_that_key(kid: str) -> None:
    text = MIXED.public_keys[kid]
    with_secret = jwt.encode(good_claims(), SECRET, algorithm="HS256", headers={"kid": kid})
    assert reason(with_secret) == "algorithm"
    header = json.dumps({"alg": "HS256", "kid": kid})
    with_public_key = hs_token(header, json.dumps(good_claims()), secret=text)  # classic key confusion
    assert reason(with_public_key) == "algorithm"


@pytest.mark.parametrize(("alg", "kid", "signer"), [
    ("ES256", "rsa", EC_KEY), ("RS256", "ec", RSA_KEY), ("PS256", "ec", RSA_KEY), ("ES256", "ec384", EC_KEY),
    ("ES384", "ec", EC384_KEY),
])
def test_an_algorithm_that_does_not_fit_the_named_key_is_refused(alg: str, kid: str, signer: Any) -> None:
    token = jwt.encode(good_claims(), signer, algorithm=alg, headers={"kid": kid})
    assert reason(token) == "algorithm"


def test_an_hmac_token_with_an_unknown_kid_uses_the_issuers_secret() -> None:
    assert verify(jwt.encode(good_claims(), SECRET, algorithm="HS256", headers={"kid": "v2"})).user == "u1"


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_unsigned_tokens_are_refused_in_any_spelling(alg: str) -> None:
    token = f"{b64(json.dumps({'alg': alg}).encode())}.{b64(json.dumps(good_claims()).encode())}."
    assert reason(token) == "algorithm"


@pytest.mark.parametrize("alg", [256, None, ["HS256"], {"alg": "HS256"}, True])
def test_an_alg_that_is_not_a_string_is_malformed(alg: Any) -> None:
    assert reason(hs_token(json.dumps({"alg": alg}), json.dumps(good_claims()))) == "malformed"


def test_an_algorithm_the_issuer_does_not_accept_is_refused() -> None:
    token = jwt.encode(good_claims(), SECRET * 2, algorithm="HS512")
    assert reason(token) == "algorithm"


@pytest.mark.parametrize("header", [
    '["HS256"]', '"HS256"', "256", "null", "true",
    '{"alg":"HS256","alg":"RS256"}',  # duplicate names: two meanings
    '{"alg":"HS256","x":NaN}', '{"alg":"HS256","x":Infinity}', '{"alg":"HS256","x":-Infinity}',
    '{"alg":"HS256",}', "{'alg':'HS256'}", "",
])
def test_a_header_that_is_not_one_json_object_is_malformed(header: str) -> None:
    assert reason(hs_token(header, json.dumps(good_claims()))) == "malformed"


@pytest.mark.parametrize("claims", [
    "[]", '"x"', "1", "null", '{"iss":"mixed","iss":"other","exp":9999999999}', '{"iss":"mixed","exp":NaN}',
    '{"iss":"mixed","exp":Infinity}',
])
def test_claims_that_are_not_one_json_object_are_malformed(claims: str) -> None:
    assert reason(hs_token('{"alg":"HS256"}', claims)) == "malformed"


def test_json_nested_deeper_than_the_parser_goes_is_malformed_not_a_crash() -> None:
    deep = '{"alg":"HS256","x":' + "[" * 3000 + "]" * 3000 + "}"
    assert reason(hs_token(deep, json.dumps(good_claims())), AuthSettings(issuers=[MIXED],
                                                                           max_token_bytes=65536)) == "malformed"
    deep_claims = '{"iss":"mixed","x":' + '{"a":' * 3000 + "1" + "}" * 3000 + "}"
    assert reason(hs_token('{"alg":"HS256"}', deep_claims), AuthSettings(issuers=[MIXED],
                                                                        max_token_bytes=65536)) == "malformed"


def test_json_that_is_not_utf8_is_malformed() -> None:
    assert reason(hs_token('{"alg":"HS256"}'.encode("utf-16"), json.dumps(good_claims()))) == "malformed"
    assert reason(hs_token(b'{"alg":"HS256","x":"\xff"}', json.dumps(good_claims()))) == "malformed"


@pytest.mark.parametrize("token", [
    "a.b", "a.b.c.d", "..", ".x.y", "x..y", "e30=.e30=.sig", "e30.e30.s+g", "e30.e30.s/g", "e30.e30.s g",
    "e30.e30.a", "a.e30.sig", "!!!.e30.sig", "e30.e30.\u00e9", "e30\x00.e30.sig", "Bearer.e30.sig",
])
def test_segments_that_are_not_base64url_are_malformed(token: str) -> None:
    assert reason(token) in ("malformed", "issuer")


@pytest.mark.parametrize("header", [
    {"alg": "HS256", "crit": ["exp"]}, {"alg": "HS256", "crit": []}, {"alg": "HS256", "crit": "b64"},
    {"alg": "HS256", "b64": False, "crit": ["b64"]}, {"alg": "HS256", "b64": True},
])
def test_jws_extensions_are_refused(header: dict[str, Any]) -> None:
    assert reason(hs_token(json.dumps(header), json.dumps(good_claims()))) == "malformed"


def test_an_expiry_no_integer_can_hold_is_invalid_not_a_crash() -> None:
    claims = '{"iss":"mixed","sub":"u1","exp":1e400}'
    assert reason(hs_token('{"alg":"HS256"}', claims)) == "malformed"
    claims = '{"iss":"mixed","sub":"u1","exp":9999999999,"nbf":-1e400}'
    assert reason(hs_token('{"alg":"HS256"}', claims)) in ("malformed", "not_yet_valid")


@pytest.mark.parametrize("iss", [None, 1, ["mixed"], {"mixed": 1}, True])
def test_an_issuer_that_is_not_a_string_is_not_trusted(iss: Any) -> None:
    assert reason(hs_token('{"alg":"HS256"}', json.dumps(good_claims(iss=iss)))) == "issuer"


@pytest.mark.parametrize(("claim", "value"), [
    ("sub", ["u1"]), ("sub", {"id": "u1"}), ("sub", 1.5), ("sub", True), ("org_id", ["a", "b"]),
    ("tier", {"gold": 1}), ("roles", {"admin": True}), ("roles", ["agent", 7]), ("roles", 7), ("scope", ["read"]),
])
def test_identity_claims_of_the_wrong_json_type_are_refused(claim: str, value: Any) -> None:
    token = jwt.encode(good_claims(**{claim: value}), SECRET, algorithm="HS256")
    assert reason(token) == "claims"


def test_integer_and_null_identity_claims_have_one_reading() -> None:
    ident = verify(jwt.encode(good_claims(org_id=42, tier=None), SECRET, algorithm="HS256"))
    assert (ident.user, ident.tenant, ident.tier) == ("u1", "42", None)
    ident = verify(jwt.encode(good_claims(org_id="", tier=7), SECRET, algorithm="HS256"))
    assert (ident.tenant, ident.tier) == (None, "7")


@pytest.mark.parametrize("error", [OverflowError("int too large"), TypeError("odd"), ValueError("odd"),
                                   KeyError("exp"), RecursionError("deep")])
def test_whatever_the_jwt_library_raises_on_a_token_is_a_401(monkeypatch: pytest.MonkeyPatch,
                                                             error: Exception) -> None:
    def decode(*args: Any, **kwargs: Any) -> Any:
        raise error

    monkeypatch.setattr(jwt, "decode", decode)
    assert reason(jwt.encode(good_claims(), SECRET, algorithm="HS256")) == "malformed"


def test_oversize_tokens_are_refused_before_decoding() -> None:
    token = jwt.encode(good_claims(pad="x" * 9000), SECRET, algorithm="HS256")
    assert reason(token) == "oversize"


# -- JWKS documents are hostile input too --------------------------------------------------------

def jwk(key: Any, **extra: Any) -> dict[str, Any]:
    algorithm = RSAAlgorithm if isinstance(key, rsa.RSAPrivateKey) else ECAlgorithm
    return {**json.loads(algorithm.to_jwk(key.public_key())), **extra}


@pytest.mark.parametrize("document", [
    None, [], "keys", 7, {"keys": "abc"}, {"keys": {"kid": "a"}}, {"keys": None}, {"keys": 7}, {"nokeys": []},
])
def test_a_jwks_document_of_the_wrong_shape_keeps_the_previous_keys(document: Any) -> None:
    previous = {"old": KEYS["rsa"]}
    assert merge_jwks(previous, document) == previous  # type: ignore[arg-type]


def test_unusable_jwks_entries_are_skipped_and_usable_ones_kept() -> None:
    document = {"keys": [
        "not-a-dict", 7, None,
        jwk(RSA_KEY, kid=17), jwk(RSA_KEY, kid=["a"]),
        jwk(RSA_KEY, kid="enc", use="enc"),
        {"kty": "oct", "kid": "sym", "k": b64(b"secret")},
        {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
        jwk(EC_KEY, kid="liar", alg="RS256"),  # an EC key claiming an RSA algorithm fits nothing
        jwk(RSA_KEY, kid="good"), jwk(EC_KEY, kid="good-ec", alg="ES256"),
    ]}
    keys = merge_jwks({}, document)
    assert set(keys) == {"good", "good-ec"}
    assert keys["good-ec"].algorithms == {"ES256"}


def test_a_jwks_key_that_names_its_algorithm_verifies_only_that_one() -> None:
    key = public_key_from_jwk(jwk(RSA_KEY, kid="ps", alg="PS256"))
    assert key is not None
    assert key.algorithms == {"PS256"}
    issuer = JwtIssuer(issuer="mixed", algorithms=["RS256", "PS256"], jwks_url="http://idp.invalid/jwks")

    def only(i: JwtIssuer, kid: str | None) -> PublicKey | None:
        return key

    settings = AuthSettings(issuers=[issuer])
    assert verify_token(jwt.encode(good_claims(), RSA_KEY, algorithm="PS256", headers={"kid": "ps"}), settings,
                        only, time.time()).user == "u1"
    with pytest.raises(AuthError) as info:
        verify_token(jwt.encode(good_claims(), RSA_KEY, algorithm="RS256", headers={"kid": "ps"}), settings, only,
                     time.time())
    assert info.value.reason == "algorithm"


# -- generated tokens ---------------------------------------------------------------------------

JSON_LEAF = st.none() | st.booleans() | st.integers(-(2 ** 70), 2 ** 70) | st.floats(allow_nan=False) | st.text(
    max_size=20)
JSON = st.recursive(JSON_LEAF, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8),
                                                                                            inner, max_size=4),
                    max_leaves=12)
ANY_TEXT = st.text(st.characters(codec="utf-8"), max_size=24)
CLAIM_VALUE = JSON | ANY_TEXT | st.sampled_from(["agent", "a,b", " x", "x ", "\r\nX-Evil: 1", "\u0141ukasz",
                                                  "100%", "caf\u00e9", "\x00", ""])


def assert_headers_are_clean(identity: Identity) -> None:
    for encoding in ("refuse", "percent"):
        try:
            headers = identity_headers(identity, encoding)
        except AuthError as exc:
            # Refusing is one of two allowed outcomes here, so the check is on the caught error.
            assert encoding == "refuse"
            assert exc.reason == "claim_unrepresentable"  # noqa: PT017
            continue
        for name, value in headers.items():
            assert name.startswith("X-Vocelio-")
            value.encode("ascii")
            assert all(0x20 <= ord(c) < 0x7F for c in value), (name, value)
            assert value == value.strip()
            assert value


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300), st.integers(0, 3))
def test_random_bytes_as_a_token_are_always_an_auth_error(data: bytes, dots: int) -> None:
    text = data.decode("latin-1")
    token = ".".join([text] + ["e30"] * dots) if dots else text
    with pytest.raises(AuthError):
        verify(token)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    alg=st.sampled_from(["HS256", "RS256", "ES256", "none"]) | JSON,
    kid=st.sampled_from(["rsa", "ec", "nope"]) | JSON,
    typ=JSON,
    extra=st.dictionaries(st.text(max_size=6), JSON, max_size=3),
    claims=st.dictionaries(st.sampled_from(["iss", "sub", "org_id", "roles", "scope", "tier", "exp", "nbf", "aud",
                                            "iat"]) | st.text(max_size=6), CLAIM_VALUE, max_size=8),
    iss=st.sampled_from(["mixed", None]) | JSON,
    exp=st.sampled_from([int(time.time()) + 600, None]) | JSON,
    signed=st.booleans(),
    garbage=st.binary(max_size=64),
)
def test_generated_headers_and_claims_give_an_auth_error_or_a_clean_identity(
        alg: Any, kid: Any, typ: Any, extra: dict[str, Any], claims: dict[str, Any], iss: Any, exp: Any,
        signed: bool, garbage: bytes) -> None:
    header = {**extra, "alg": alg, "kid": kid, "typ": typ}
    body = dict(claims)
    if iss is not None:
        body["iss"] = iss
    if exp is not None:
        body["exp"] = exp
    header_text, claims_text = json.dumps(header), json.dumps(body)
    unsigned = f"{b64(header_text.encode())}.{b64(claims_text.encode())}.{b64(garbage)}"
    token = hs_token(header_text, claims_text) if signed else unsigned
    try:
        identity = verify(token)
    except AuthError:
        return
    assert_headers_are_clean(identity)


@settings(max_examples=400, deadline=None)
@given(sub=CLAIM_VALUE, org=CLAIM_VALUE, roles=CLAIM_VALUE, scope=CLAIM_VALUE, tier=CLAIM_VALUE)
def test_correctly_signed_random_claims_give_an_auth_error_or_clean_headers(sub: Any, org: Any, roles: Any,
                                                                            scope: Any, tier: Any) -> None:
    token = jwt.encode(good_claims(sub=sub, org_id=org, roles=roles, scope=scope, tier=tier), SECRET,
                       algorithm="HS256")
    try:
        identity = verify(token)
    except AuthError as exc:
        # An error is one of two allowed outcomes of a generated token.
        assert exc.reason in ("claims", "malformed")  # noqa: PT017
        return
    assert_headers_are_clean(identity)
