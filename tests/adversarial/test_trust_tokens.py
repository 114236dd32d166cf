"""Odd credentials through a real gateway: a corpus of tokens and API keys that
must each get the 401 envelope with WWW-Authenticate (never a 500, never the
token echoed), on protected and public routes alike; the recording upstream is
never reached, and no descriptor, in-flight count or endpoint slot leaks. Then
the claim encoding policy end to end: refused by default, percent-encoded when
configured, the same for API keys."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.harness.app_fixtures import GatewayFactory, service
from tests.harness.hostile import RecordingUpstreamFactory, raw_request, resources, settled, status_of
from tests.harness.trust_tools import envelope_of, head_of, request_bytes
from vocelio_contract.apikeys import mint_key
from vocelio_contract.config import GatewayConfig

SECRET = "mixed-issuer-hmac-secret-of-enough-length!"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def pem(key: Any) -> str:
    return str(key.public_key().public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo).decode())


RSA_PEM, EC_PEM = pem(RSA_KEY), pem(EC_KEY)
AUTH = {"issuers": [{"issuer": "mixed", "algorithms": ["HS256", "RS256", "ES256"], "secret": SECRET,
                     "public_keys": {"rsa": RSA_PEM, "ec": EC_PEM}}],
        "failure_limit": {"requests": 0}}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"iss": "mixed", "sub": "u1", "org_id": "acme", "roles": ["agent"],
                            "exp": int(time.time()) + 300}
    base.update(kw)
    return base


def hs(header: str | bytes, body: str | bytes, secret: str = SECRET) -> str:
    h = b64(header if isinstance(header, bytes) else header.encode())
    c = b64(body if isinstance(body, bytes) else body.encode())
    return f"{h}.{c}.{b64(hmac.new(secret.encode(), f'{h}.{c}'.encode(), hashlib.sha256).digest())}"


def with_header(token: str, header: dict[str, Any]) -> str:
    return b64(json.dumps(header).encode()) + "." + token.split(".", 1)[1]


RS = jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "rsa"})
GOOD_CLAIMS = json.dumps(claims())

TOKENS: dict[str, str | bytes] = {
    **{f"kid is {kind}": with_header(RS, {"alg": "RS256", "kid": kid}) for kind, kid in
       (("a number", 7), ("a list", ["rsa"]), ("an object", {"k": "rsa"}), ("true", True), ("null", None))},
    "HS256 whose kid names the RSA key": jwt.encode(claims(), SECRET, algorithm="HS256", headers={"kid": "rsa"}),
    "HS256 signed with the RSA public key": hs('{"alg":"HS256","kid":"rsa"}', GOOD_CLAIMS, secret=RSA_PEM),
    "HS256 signed with the EC public key": hs('{"alg":"HS256","kid":"ec"}', GOOD_CLAIMS, secret=EC_PEM),
    "ES256 whose kid names the RSA key": jwt.encode(claims(), EC_KEY, algorithm="ES256", headers={"kid": "rsa"}),
    "RS256 whose kid names the EC key": jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "ec"}),
    "alg none": b64(b'{"alg":"none"}') + "." + b64(GOOD_CLAIMS.encode()) + ".",
    "alg NONE signed": hs('{"alg":"NONE"}', GOOD_CLAIMS),
    "alg a number": hs('{"alg":256}', GOOD_CLAIMS),
    "alg a list": hs('{"alg":["HS256"]}', GOOD_CLAIMS),
    "header a list": hs('["HS256"]', GOOD_CLAIMS),
    "header a string": hs('"HS256"', GOOD_CLAIMS),
    "claims a list": hs('{"alg":"HS256"}', "[1,2]"),
    "claims null": hs('{"alg":"HS256"}', "null"),
    "duplicate alg": hs('{"alg":"HS256","alg":"RS256"}', GOOD_CLAIMS),
    "duplicate iss": hs('{"alg":"HS256"}', '{"iss":"mixed","iss":"x","exp":9999999999}'),
    "NaN in claims": hs('{"alg":"HS256"}', '{"iss":"mixed","exp":NaN}'),
    "exp 1e400": hs('{"alg":"HS256"}', '{"iss":"mixed","sub":"u1","exp":1e400}'),
    "deep header": hs('{"alg":"HS256","x":' + "[" * 2500 + "]" * 2500 + "}", GOOD_CLAIMS),
    "not UTF-8": hs(b'{"alg":"HS256","x":"\xff"}', GOOD_CLAIMS),
    "UTF-16 JSON": hs('{"alg":"HS256"}'.encode("utf-16"), GOOD_CLAIMS),
    "crit header": hs('{"alg":"HS256","crit":["exp"]}', GOOD_CLAIMS),
    "b64 false": hs('{"alg":"HS256","b64":false,"crit":["b64"]}', GOOD_CLAIMS),
    "padded segments": RS.replace(".", "=."),
    "standard base64 alphabet": RS[:-4] + "+/+/",
    "four segments": RS + ".x",
    "two segments": RS.rsplit(".", 1)[0],
    "empty segments": "..",
    "not base64": "!!!.###.$$$",
    "obs-text bytes": b"\xff\xfe\xfd.\x80\x81.\xe9",
    "UTF-8 letters": "\u0141\u00f3d\u017a.e30.x".encode(),
    "oversize": jwt.encode(claims(pad="x" * 9000), SECRET, algorithm="HS256"),
    "expired": jwt.encode(claims(exp=int(time.time()) - 3600), SECRET, algorithm="HS256"),
    "unknown issuer": jwt.encode(claims(iss="evil"), SECRET, algorithm="HS256"),
    "issuer a list": hs('{"alg":"HS256"}', json.dumps(claims(iss=["mixed"]))),
    "tampered signature": RS[:-6] + ("AAAAAA" if not RS.endswith("AAAAAA") else "BBBBBB"),
    "sub a list": jwt.encode(claims(sub=["admin"]), SECRET, algorithm="HS256"),
    "tier an object": jwt.encode(claims(tier={"gold": True}), SECRET, algorithm="HS256"),
    "roles with a number": jwt.encode(claims(roles=["agent", 1]), SECRET, algorithm="HS256"),
    "sub not Latin-1": jwt.encode(claims(sub="\u0141ukasz"), SECRET, algorithm="HS256"),
    "sub with a line break": jwt.encode(claims(sub="u1\r\nX-Vocelio-Roles: admin"), SECRET, algorithm="HS256"),
    "tenant Latin-1 but not ASCII": jwt.encode(claims(org_id="caf\u00e9"), SECRET, algorithm="HS256"),
    "role holding a comma": jwt.encode(claims(roles=["agent,admin"]), SECRET, algorithm="HS256"),
    "sub with a trailing space": jwt.encode(claims(sub="admin "), SECRET, algorithm="HS256"),
}

AUTHORIZATION_VALUES: dict[str, bytes] = {
    "no token": b"Bearer",
    "only spaces": b"Bearer    ",
    "basic scheme": b"Basic dXNlcjpwYXNz",
    "token with a space": b"Bearer " + RS[:20].encode() + b" " + RS[20:].encode(),
    "empty": b"",
}


def config() -> GatewayConfig:
    return GatewayConfig(services=[
        service("svc", prefixes=["/api/v1/svc"], auth={"mode": "jwt"}, health_check={"enabled": False}),
        service("open", prefixes=["/api/v1/open"], health_check={"enabled": False})])


def assert_refused(answer: bytes, secret_part: bytes, what: str) -> dict[str, Any]:
    assert status_of(answer) == 401, (what, answer[:300])
    head = head_of(answer)
    assert head["www-authenticate"][0].startswith('Bearer realm="vocelio"'), what
    assert head["content-type"][0].startswith("application/json"), what
    body = envelope_of(answer)
    assert body["status_code"] == 401, what
    assert body["error"] == "Unauthorized", what
    assert body["request_id"], what
    if len(secret_part) >= 8:
        assert secret_part[-8:] not in answer, what  # the credential is never echoed
    return body


async def test_every_odd_token_is_a_401_envelope_and_never_reaches_the_upstream(
        recording_upstream: RecordingUpstreamFactory, gateway_factory: GatewayFactory) -> None:
    up = await recording_upstream()
    cfg = config()
    for svc in cfg.services:
        svc.backends[0].endpoints.append(up.endpoint())
    gw = await gateway_factory(cfg, auth=AUTH)
    before = resources(gw.app)
    for name, token in TOKENS.items():
        raw = token.encode() if isinstance(token, str) else token
        for path in ("/api/v1/svc/x", "/api/v1/open/x"):
            answer = await raw_request(gw.port, request_bytes(path, [("Authorization", b"Bearer " + raw)]))
            assert_refused(answer, raw, f"{name} on {path}")
    for name, value in AUTHORIZATION_VALUES.items():
        answer = await raw_request(gw.port, request_bytes("/api/v1/open/x", [("Authorization", value)]))
        assert_refused(answer, value, name)
    assert up.requests == []
    assert up.connections == 0
    after = await settled(gw.app, before)
    assert after.breakers == before.breakers == {s.id: "closed" for s in cfg.services}


async def test_credentials_are_read_in_one_meaning(recording_upstream: RecordingUpstreamFactory,
                                                   gateway_factory: GatewayFactory, tmp_path: Path) -> None:
    up = await recording_upstream()
    key, record = mint_key(tenant="acme")
    odd_key, odd_record = mint_key(tenant="\u00c5ngstr\u00f6m")
    keys_file = tmp_path / "keys.json"
    keys_file.write_text(json.dumps([record.model_dump(mode="json"), odd_record.model_dump(mode="json")]))
    cfg = config()
    for svc in cfg.services:
        svc.backends[0].endpoints.append(up.endpoint())
    gw = await gateway_factory(cfg, auth=AUTH, api_keys_path=keys_file)
    before = resources(gw.app)
    good = jwt.encode(claims(), SECRET, algorithm="HS256")
    cases: dict[str, tuple[list[tuple[str, str | bytes]], str]] = {
        "two Authorization headers": ([("Authorization", f"Bearer {good}"), ("Authorization", f"Bearer {good}")],
                                      "sent more than once"),
        "two Authorization headers, other case": ([("Authorization", f"Bearer {good}"),
                                                   ("authorization", f"Bearer {RS}")], "sent more than once"),
        "two X-API-Key headers": ([("X-API-Key", key), ("X-API-Key", key)], "sent more than once"),
        "a token and a key": ([("Authorization", f"Bearer {good}"), ("X-API-Key", key)], "not both"),
        "a malformed key": ([("X-API-Key", "voc_nope")], "malformed"),
        "a key whose tenant a header cannot hold": ([("X-API-Key", odd_key)], "not representable"),
    }
    for name, (headers, message) in cases.items():
        answer = await raw_request(gw.port, request_bytes("/api/v1/open/x", headers))
        body = assert_refused(answer, key.encode(), name)
        assert message in body["message"], (name, body["message"])
    assert up.requests == []
    # The same credentials one at a time are fine.
    assert status_of(await raw_request(gw.port, request_bytes("/api/v1/svc/x", [("Authorization",
                                                                                   f"Bearer {good}")]))) == 200
    assert status_of(await raw_request(gw.port, request_bytes("/api/v1/open/x", [("X-API-Key", key)]))) == 200
    assert len(up.requests) == 2
    identity = {k: v for k, v in up.requests[-1].headers if k.lower().startswith("x-vocelio")}
    assert identity == {"X-Vocelio-Auth-Method": "api-key", "X-Vocelio-User": f"apikey:{record.id}",
                        "X-Vocelio-Tenant": "acme"}
    await settled(gw.app, before)


async def test_valid_tokens_of_every_key_type_pass_with_exactly_the_identity_headers(
        recording_upstream: RecordingUpstreamFactory, gateway_factory: GatewayFactory) -> None:
    up = await recording_upstream()
    gw = await gateway_factory(GatewayConfig(services=[service("svc", up.endpoint(), auth={"mode": "jwt"},
                                                               health_check={"enabled": False})]), auth=AUTH)
    tokens = [jwt.encode(claims(tier="gold"), SECRET, algorithm="HS256"),
              jwt.encode(claims(tier="gold"), RSA_KEY, algorithm="RS256", headers={"kid": "rsa"}),
              jwt.encode(claims(tier="gold"), EC_KEY, algorithm="ES256", headers={"kid": "ec"})]
    for token in tokens:
        answer = await raw_request(gw.port, request_bytes("/api/v1/svc/x", [
            ("Authorization", f"Bearer {token}"), ("X-Vocelio-Roles", "admin"), ("X_Vocelio_Tenant", "globex")]))
        assert status_of(answer) == 200, answer[:300]
    for received in up.requests:
        identity = {k: v for k, v in received.headers if k.lower().startswith("x-vocelio")}
        assert identity == {"X-Vocelio-Auth-Method": "jwt", "X-Vocelio-User": "u1", "X-Vocelio-Tenant": "acme",
                            "X-Vocelio-Roles": "agent", "X-Vocelio-Tier": "gold"}
        assert not [k for k, _ in received.headers if "_" in k]


@pytest.mark.parametrize(("sub", "sent"), [("\u0141ukasz", "%C5%81ukasz"), ("100% real", "100%25%20real"),
                                           ("plain", "plain")])
async def test_percent_encoding_writes_any_claim_as_printable_ascii(recording_upstream: RecordingUpstreamFactory,
                                                                    gateway_factory: GatewayFactory, sub: str,
                                                                    sent: str) -> None:
    up = await recording_upstream()
    gw = await gateway_factory(GatewayConfig(services=[service("svc", up.endpoint(), health_check={"enabled": False})]),
                               auth={**AUTH, "claim_encoding": "percent"})
    token = jwt.encode(claims(sub=sub, org_id="caf\u00e9", roles=["a,b"]), SECRET, algorithm="HS256")
    answer = await raw_request(gw.port, request_bytes("/api/v1/svc/x", [("Authorization", f"Bearer {token}")]))
    assert status_of(answer) == 200
    received = up.requests[0]
    assert received.header("X-Vocelio-User") == [sent]
    assert received.header("X-Vocelio-Tenant") == ["caf%C3%A9"]
    assert received.header("X-Vocelio-Roles") == ["a%2Cb"]
