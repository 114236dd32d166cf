"""JWT validation: algorithm allow-lists per issuer (no `none`, no HMAC/RSA
confusion), size limit, exp/nbf/iss/aud with leeway, and claims mapped to an
`Identity`. Pure apart from the key lookup, which the caller supplies
(static keys, or the JWKS cache)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import jwt
from jwt.algorithms import get_default_algorithms

from .identity import AuthError, Identity
from .settings import AuthSettings, JwtIssuer

_HMAC = frozenset({"HS256", "HS384", "HS512"})
KeyLookup = Callable[[JwtIssuer, str | None], Any]


def _b64_json(segment: str) -> dict[str, Any]:
    from base64 import urlsafe_b64decode

    try:
        data = json.loads(urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, TypeError) as exc:
        raise AuthError("malformed", "The bearer token is malformed") from exc
    if not isinstance(data, dict):
        raise AuthError("malformed", "The bearer token is malformed")
    return data


def peek(token: str, settings: AuthSettings) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and unverified claims, only to choose the issuer and key."""
    if len(token) > settings.max_token_bytes:
        raise AuthError("oversize", f"The bearer token exceeds {settings.max_token_bytes} bytes")
    parts = token.split(".")
    if len(parts) != 3 or not all(parts[:2]):
        raise AuthError("malformed", "The bearer token is malformed")
    return _b64_json(parts[0]), _b64_json(parts[1])


def find_issuer(settings: AuthSettings, claims: dict[str, Any]) -> JwtIssuer:
    iss = claims.get("iss")
    for issuer in settings.issuers:
        if issuer.issuer == iss:
            return issuer
    raise AuthError("issuer", "The token's issuer is not trusted")


def verify_token(token: str, settings: AuthSettings, key_for: KeyLookup, now: float,
                 peeked: tuple[dict[str, Any], dict[str, Any]] | None = None) -> Identity:
    """`peeked` is `peek(token)` when the caller already decoded it (to fetch keys)."""
    header, unverified = peeked or peek(token, settings)
    alg = header.get("alg")
    if not isinstance(alg, str) or alg.lower() == "none":
        raise AuthError("algorithm", "Unsigned tokens are not accepted")
    issuer = find_issuer(settings, unverified)
    if alg not in issuer.algorithms:
        raise AuthError("algorithm", f"Algorithm {alg} is not accepted for this issuer")
    if alg in _HMAC:
        if not issuer.secret:
            raise AuthError("algorithm", f"Algorithm {alg} is not accepted for this issuer")
        key: Any = issuer.secret
    else:
        key = key_for(issuer, header.get("kid"))
        if key is None:
            raise AuthError("key", "The token's signing key is unknown")
    try:
        claims = jwt.decode(
            token, key=key, algorithms=[alg], issuer=issuer.issuer,
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
    except jwt.InvalidTokenError as exc:
        raise AuthError("malformed", "The bearer token is invalid") from exc
    _ = now  # PyJWT reads the clock itself; leeway bounds the skew
    return identity_from_claims(claims, settings)


def identity_from_claims(claims: dict[str, Any], settings: AuthSettings) -> Identity:
    names = settings.claims
    user = claims.get(names.user)
    roles: set[str] = set()
    raw_roles = claims.get(names.roles)
    if isinstance(raw_roles, list):
        roles.update(str(r) for r in raw_roles)
    elif isinstance(raw_roles, str):
        roles.update(raw_roles.split())
    scope = claims.get(names.scope)
    if isinstance(scope, str):
        roles.update(scope.split())
    tenant = claims.get(names.tenant)
    tier = claims.get(names.tier)
    attributes = {k: str(v) for k, v in claims.items()
                  if isinstance(v, str | int | bool) and k not in ("exp", "nbf", "iat")}
    return Identity(method="jwt", ip="", user=str(user) if user is not None else None,
                    tenant=str(tenant) if tenant is not None else None, roles=frozenset(roles),
                    tier=str(tier) if tier is not None else None, attributes=attributes)


def public_key_from_jwk(jwk: dict[str, Any]) -> Any:
    kty = jwk.get("kty")
    algorithms = get_default_algorithms()
    if kty == "RSA":
        return algorithms["RS256"].from_jwk(jwk)
    if kty == "EC":
        return algorithms["ES256"].from_jwk(jwk)
    return None
