"""Who a caller is, the identity headers the upstream receives, and the
authorization decision for a route. Pure; the authenticators (`tokens`,
`apikeys`) produce an `Identity`, the edge policy turns it into headers with
`identity_headers` and asks `authorize`.

The identity headers are exactly `X-Vocelio-Auth-Method` (always) and, when the
identity has them, `X-Vocelio-User`, `X-Vocelio-Tenant`, `X-Vocelio-Roles` and
`X-Vocelio-Tier` (`IDENTITY_HEADERS`). Their values come from an issuer or a
key record and may hold anything; a header value must hold printable ASCII
only, or backends read it differently (Latin-1 vs UTF-8, trimmed spaces, list
splitting on commas) or a line break adds a header. The claim encoding policy
(`auth.claim_encoding`) decides, the same for tokens and API keys:

* `refuse` (default): a value is written as it is when it is printable ASCII
  (0x20-0x7E) without leading or trailing spaces, and for roles also without a
  comma (the list separator); any other value is refused with 401 "claim not
  representable";
* `percent`: every character outside printable ASCII, and `%`, `,` and space,
  is written as the percent-encoded bytes of its UTF-8 (RFC 3986 style,
  upper-case hex); backends percent-decode. Values of plain printable ASCII
  without those three characters are unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from vocelio_contract.config import AuthPolicy

ClaimEncoding = Literal["refuse", "percent"]

#: Every identity header the gateway sets upstream (and strips from clients in any spelling).
IDENTITY_HEADERS = ("X-Vocelio-Auth-Method", "X-Vocelio-User", "X-Vocelio-Tenant", "X-Vocelio-Roles",
                    "X-Vocelio-Tier")

_AS_IS = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?")
_ROLE_AS_IS = re.compile(r"[\x21-\x2b\x2d-\x7e](?:[\x20-\x2b\x2d-\x7e]*[\x21-\x2b\x2d-\x7e])?")
# Kept as they are by `percent`: printable ASCII but space, '%' and ','.
_PERCENT_SAFE = frozenset(chr(c) for c in range(0x21, 0x7F)) - {"%", ","}
_ANONYMOUS_HEADERS = {"X-Vocelio-Auth-Method": "anonymous"}


@dataclass(frozen=True)
class Identity:
    method: str  # "jwt", "api-key" or "anonymous"
    ip: str
    user: str | None = None
    tenant: str | None = None
    roles: frozenset[str] = frozenset()
    tier: str | None = None
    key_id: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)

    @property
    def authenticated(self) -> bool:
        return self.method != "anonymous"

    def key_for(self, key_by: str) -> str:
        """The rate-limit bucket of this caller for a tier's `keyBy`."""
        if key_by == "user" and self.user:
            return f"user:{self.user}"
        if key_by == "api-key" and self.key_id:
            return f"key:{self.key_id}"
        if key_by == "tenant" and self.tenant:
            return f"tenant:{self.tenant}"
        return f"ip:{self.ip}"

    def upstream_headers(self, encoding: ClaimEncoding = "refuse") -> dict[str, str]:
        return identity_headers(self, encoding)


class AuthError(Exception):
    """Presented credentials are invalid (401). The message never echoes a secret."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def percent_encode(value: str) -> str:
    """`value` with every character outside printable ASCII, and '%', ',' and space,
    replaced by the percent-encoded bytes of its UTF-8."""
    if all(c in _PERCENT_SAFE for c in value):
        return value
    out = []
    for c in value:
        if c in _PERCENT_SAFE:
            out.append(c)
        else:
            out.extend(f"%{b:02X}" for b in c.encode("utf-8", "surrogatepass"))
    return "".join(out)


def _value(name: str, value: str, encoding: ClaimEncoding) -> str:
    if _AS_IS.fullmatch(value) and (encoding == "refuse" or ("%" not in value and "," not in value
                                    and " " not in value)):
        return value
    if encoding == "percent":
        return percent_encode(value)
    raise AuthError("claim_unrepresentable", f"The {name} claim is not representable in a header")


def _roles(roles: frozenset[str], encoding: ClaimEncoding) -> str:
    if encoding == "percent":
        return ",".join(sorted(percent_encode(r) for r in roles))
    for role in roles:
        if not _ROLE_AS_IS.fullmatch(role):
            raise AuthError("claim_unrepresentable", "A role is not representable in a header")
    return ",".join(sorted(roles))


def identity_headers(identity: Identity, encoding: ClaimEncoding) -> dict[str, str]:
    """The identity headers for the upstream, per the claim encoding policy (module
    doc). Raises `AuthError` when `refuse` meets a value it cannot write. Empty
    values are absent values."""
    if identity.method == "anonymous":
        return _ANONYMOUS_HEADERS
    headers = {"X-Vocelio-Auth-Method": identity.method}
    if identity.user:
        headers["X-Vocelio-User"] = _value("user", identity.user, encoding)
    if identity.tenant:
        headers["X-Vocelio-Tenant"] = _value("tenant", identity.tenant, encoding)
    roles = frozenset(r for r in identity.roles if r)
    if roles:
        headers["X-Vocelio-Roles"] = _roles(roles, encoding)
    if identity.tier:
        headers["X-Vocelio-Tier"] = _value("tier", identity.tier, encoding)
    return headers


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    status: int = 200
    message: str = ""


_ALLOWED = Decision(True)


def authorize(policy: AuthPolicy, identity: Identity) -> Decision:
    mode = policy.mode
    if mode == "public":
        return _ALLOWED
    if not identity.authenticated:
        return Decision(False, 401, "Authentication required")
    if mode == "jwt" and identity.method != "jwt":
        return Decision(False, 401, "This route requires a bearer token")
    if mode == "api-key" and identity.method != "api-key":
        return Decision(False, 401, "This route requires an API key")
    if policy.tenants and identity.tenant not in policy.tenants:
        return Decision(False, 403, "Your organisation may not use this service")
    if policy.roles and not identity.roles.intersection(policy.roles):
        return Decision(False, 403, "Missing a required role: " + ", ".join(policy.roles))
    return _ALLOWED
