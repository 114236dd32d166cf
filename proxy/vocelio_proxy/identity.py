"""Who a caller is, and the authorization decision for a route. Pure; the
authenticators produce an `Identity`, the edge policy asks `authorize`."""

from __future__ import annotations

from dataclasses import dataclass, field

from .config import AuthPolicy

_NOT_IN_HEADERS = str.maketrans("", "", "\r\n\x00")


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

    def upstream_headers(self) -> dict[str, str]:
        """Identity headers for the upstream. Claim values are the issuer's text: line
        breaks and NULs are removed so a claim can never add a header of its own."""
        headers = {"X-Vocelio-Auth-Method": self.method}
        if self.user:
            headers["X-Vocelio-User"] = self.user.translate(_NOT_IN_HEADERS)
        if self.tenant:
            headers["X-Vocelio-Tenant"] = self.tenant.translate(_NOT_IN_HEADERS)
        if self.roles:
            headers["X-Vocelio-Roles"] = ",".join(sorted(self.roles)).translate(_NOT_IN_HEADERS)
        if self.tier:
            headers["X-Vocelio-Tier"] = self.tier.translate(_NOT_IN_HEADERS)
        return headers


class AuthError(Exception):
    """Presented credentials are invalid (401). The message never echoes a secret."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


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
