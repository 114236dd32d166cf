"""JWT validation, pure apart from the key lookup the caller supplies (static
keys, or the JWKS cache). Every odd token is an `AuthError` (401), never
another exception. The rules, in order:

* size: at most `auth.max_token_bytes`;
* form: three base64url segments (RFC 7515 compact form, no padding, no other
  characters), header and claims are UTF-8 JSON objects with no duplicate
  names and no NaN/Infinity (one meaning for the gateway and for PyJWT, which
  reads them again); nesting too deep to parse is malformed;
* header: `alg` a string the issuer accepts (never `none`); `kid` absent or a
  string; no `crit` (the gateway implements no extension) and no `b64`
  (RFC 7797 unencoded payloads are not tokens);
* issuer: `iss` a string naming a configured issuer;
* key: an HMAC `alg` verifies only with the issuer's secret, and never when the
  `kid` names one of its public keys; an RSA/EC `alg` verifies only with the
  public key the `kid` names, and only when the algorithm fits that key (RS*/PS*
  an RSA key, ES256 a P-256 key, ES384 a P-384 key, and the JWK's own `alg` when
  it has one): no key confusion on an issuer with mixed key types;
* time claims: `exp`, `nbf` and `iat` are JSON numbers (RFC 7519 NumericDate:
  an integer or a finite float, never a string, a boolean or `1e400`), checked
  before PyJWT, which would read `"1700000000"` as a date;
* claims: `exp` and `iss` required, `nbf`/`aud` checked, with leeway (PyJWT);
  the user claim (`auth.claims.user`, `sub` by default) is required: a JWT
  identity always names its user (`X-Vocelio-User`), as the JWT filters of
  Envoy and Kong give every authenticated request a principal;
  the identity claims are strings (tenant and tier may also be integers,
  written in decimal; PyJWT requires `sub` and `jti` to be strings), roles a
  list of strings or a space-separated string, scope a string; a claim of any
  other JSON type is refused.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt.algorithms import get_default_algorithms

from vocelio_proxy.policy.auth.identity import AuthError, Identity
from vocelio_proxy.settings import AuthSettings, JwtIssuer

_HMAC = frozenset({"HS256", "HS384", "HS512"})
_RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_CURVE_ALGORITHMS = {"secp256r1": frozenset({"ES256"}), "secp384r1": frozenset({"ES384"})}
_SEGMENT = re.compile(r"[A-Za-z0-9_-]*")
_MALFORMED = "The bearer token is malformed"
_TIME_CLAIMS = ("exp", "nbf", "iat")


@dataclass(frozen=True, slots=True)
class PublicKey:
    """A verification key and the algorithms it may verify (its type decides;
    a JWK's `alg` narrows it)."""

    key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey
    algorithms: frozenset[str]


#: (issuer, kid) -> the public key that kid names, or None.
KeyLookup = Callable[[JwtIssuer, str | None], PublicKey | None]


@dataclass(frozen=True, slots=True)
class PeekedToken:
    """A token's header and unverified claims, checked for form, with the
    algorithm, key id and issuer they name: enough to fetch keys, nothing trusted."""

    header: dict[str, Any]
    claims: dict[str, Any]
    alg: str
    kid: str | None
    issuer: JwtIssuer


def public_key(key: Any, jwk_alg: Any = None) -> PublicKey | None:
    """Wrap an RSA or EC (P-256, P-384) public key; None for any other key."""
    if isinstance(key, rsa.RSAPublicKey):
        algorithms = _RSA_ALGORITHMS
    elif isinstance(key, ec.EllipticCurvePublicKey):
        algorithms = _CURVE_ALGORITHMS.get(key.curve.name, frozenset())
    else:
        return None
    if jwk_alg is not None:
        algorithms = algorithms & {jwk_alg} if isinstance(jwk_alg, str) else frozenset()
    return PublicKey(key, algorithms) if algorithms else None


def public_key_from_pem(pem: str) -> PublicKey | None:
    try:
        return public_key(load_pem_public_key(pem.encode()))
    except (ValueError, TypeError):
        return None


def public_key_from_jwk(jwk: Any) -> PublicKey | None:
    """A JWKS entry's key, or None when it is not an RSA/EC signature key."""
    if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
        return None
    kty = jwk.get("kty")
    algorithms = get_default_algorithms()
    try:
        if kty == "RSA":
            key = algorithms["RS256"].from_jwk(jwk)
        elif kty == "EC":
            key = algorithms["ES256"].from_jwk(jwk)
        else:
            return None
    except (jwt.PyJWTError, ValueError, TypeError, KeyError):
        return None
    return public_key(key, jwk.get("alg"))


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("duplicate member name")
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _segment_json(segment: str) -> dict[str, Any]:
    if not _SEGMENT.fullmatch(segment) or len(segment) % 4 == 1:
        raise AuthError("malformed", _MALFORMED)
    try:
        text = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)).decode("utf-8")
        data = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except (ValueError, binascii.Error, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise AuthError("malformed", _MALFORMED) from exc
    if not isinstance(data, dict):
        raise AuthError("malformed", _MALFORMED)
    return data


def peek(token: str, settings: AuthSettings) -> PeekedToken:
    """Check a token's form and header and find its issuer, without verifying it."""
    if len(token) > settings.max_token_bytes:
        raise AuthError("oversize", f"The bearer token exceeds {settings.max_token_bytes} bytes")
    parts = token.split(".")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise AuthError("malformed", _MALFORMED)
    if not _SEGMENT.fullmatch(parts[2]) or len(parts[2]) % 4 == 1:
        raise AuthError("malformed", _MALFORMED)
    header = _segment_json(parts[0])
    claims = _segment_json(parts[1])
    alg = header.get("alg")
    if not isinstance(alg, str):
        raise AuthError("malformed", "The token's algorithm (alg) is not a string")
    if alg.lower() == "none":
        raise AuthError("algorithm", "Unsigned tokens are not accepted")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise AuthError("malformed", "The token's key id (kid) is not a string")
    if "crit" in header or "b64" in header:
        raise AuthError("malformed", "The token uses a JWS extension the gateway does not accept")
    issuer = find_issuer(settings, claims)
    if alg not in issuer.algorithms:
        raise AuthError("algorithm", "The token's algorithm is not accepted for its issuer")
    return PeekedToken(header, claims, alg, kid, issuer)


def find_issuer(settings: AuthSettings, claims: dict[str, Any]) -> JwtIssuer:
    iss = claims.get("iss")
    if isinstance(iss, str):
        for issuer in settings.issuers:
            if issuer.issuer == iss:
                return issuer
    raise AuthError("issuer", "The token's issuer is not trusted")


def _verification_key(peeked: PeekedToken, key_for: KeyLookup) -> Any:
    alg, kid, issuer = peeked.alg, peeked.kid, peeked.issuer
    if alg in _HMAC:
        # The secret has no kid; a kid that names a public key means someone is trying to
        # get a public key used as an HMAC secret.
        if not issuer.secret or (kid is not None and key_for(issuer, kid) is not None):
            raise AuthError("algorithm", "The token's algorithm does not fit its key")
        return issuer.secret
    key = key_for(issuer, kid)
    if key is None:
        raise AuthError("key", "The token's signing key is unknown")
    if alg not in key.algorithms:
        raise AuthError("algorithm", "The token's algorithm does not fit its key")
    return key.key


def verify_token(token: str, settings: AuthSettings, key_for: KeyLookup, now: float,
                 peeked: PeekedToken | None = None) -> Identity:
    """`peeked` is `peek(token)` when the caller already decoded it (to fetch keys)."""
    peeked = peeked or peek(token, settings)
    _check_time_claims(peeked.claims)
    issuer = peeked.issuer
    key = _verification_key(peeked, key_for)
    try:
        claims = jwt.decode(
            token, key=key, algorithms=[peeked.alg], issuer=issuer.issuer,
            audience=issuer.audiences or None, leeway=settings.leeway_s,
            options={"require": ["exp", "iss"], "verify_aud": bool(issuer.audiences)},
        )
    except jwt.ExpiredSignatureError as exc:
        raise AuthError("expired", "The token has expired") from exc
    except jwt.ImmatureSignatureError as exc:
        raise AuthError("not_yet_valid", "The token is not valid yet") from exc
    except jwt.InvalidAudienceError as exc:
        raise AuthError("audience", "The token is not meant for this gateway") from exc
    except jwt.InvalidIssuerError as exc:
        raise AuthError("issuer", "The token's issuer is not trusted") from exc
    except jwt.InvalidSignatureError as exc:
        raise AuthError("signature", "The token's signature is invalid") from exc
    except jwt.MissingRequiredClaimError as exc:
        raise AuthError("claims", f"The token lacks the {exc.claim} claim") from exc
    except (jwt.exceptions.InvalidSubjectError, jwt.exceptions.InvalidJTIError) as exc:  # not strings
        raise AuthError("claims", "The token's sub or jti claim is not a string") from exc
    except (jwt.PyJWTError, ValueError, TypeError, OverflowError, KeyError, RecursionError) as exc:
        # A claim PyJWT cannot read (an `exp` of 1e400 is a float it cannot make an int, ...).
        raise AuthError("malformed", "The bearer token is invalid") from exc
    _ = now  # PyJWT reads the clock itself; leeway bounds the skew
    return identity_from_claims(claims, settings)


def _check_time_claims(claims: dict[str, Any]) -> None:
    """`exp`, `nbf`, `iat`, when present, are JSON numbers (RFC 7519 NumericDate)."""
    for name in _TIME_CLAIMS:
        if name not in claims:
            continue
        value = claims[name]
        if isinstance(value, bool) or not isinstance(value, int | float) or (
                isinstance(value, float) and not math.isfinite(value)):
            raise AuthError("malformed", f"The token's {name} claim is not a number")


def _text_claim(claims: dict[str, Any], name: str) -> str | None:
    value = claims.get(name)
    if value is None or isinstance(value, str):
        return value or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise AuthError("claims", f"The token's {name} claim is not a string")


def identity_from_claims(claims: dict[str, Any], settings: AuthSettings) -> Identity:
    names = settings.claims
    roles: set[str] = set()
    raw_roles = claims.get(names.roles)
    if isinstance(raw_roles, list) and all(isinstance(r, str) for r in raw_roles):
        roles.update(r for r in raw_roles if r)
    elif isinstance(raw_roles, str):
        roles.update(raw_roles.split())
    elif raw_roles is not None:
        raise AuthError("claims", f"The token's {names.roles} claim is not a list of strings")
    scope = claims.get(names.scope)
    if isinstance(scope, str):
        roles.update(scope.split())
    elif scope is not None:
        raise AuthError("claims", f"The token's {names.scope} claim is not a string")
    attributes = {k: str(v) for k, v in claims.items()
                  if isinstance(v, str | int | bool) and k not in ("exp", "nbf", "iat")}
    user = _text_claim(claims, names.user)
    if user is None:
        # A verified token that names nobody: the upstream would see an authenticated
        # request without X-Vocelio-User and could not tell it from a gateway fault.
        raise AuthError("claims", "The token has no subject")
    return Identity(method="jwt", ip="", user=user,
                    tenant=_text_claim(claims, names.tenant), roles=frozenset(roles),
                    tier=_text_claim(claims, names.tier), attributes=attributes)
