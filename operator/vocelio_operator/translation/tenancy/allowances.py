"""Which API keys a namespace may publish: the admin-owned allowance mapping.
Pure; the reconciler asks `KeyPolicy.refusal` for every API-key Secret it
reads and publishes only the keys it allows (it posts the reason as an Event
on the Secret otherwise).

Keys in the gateway's own namespace are minted by the platform team and are
unrestricted. A key elsewhere is published only when one allowance whose
namespace patterns match its namespace allows its tenant, every one of its
roles and its tier ("*" allows any value). A key without a tenant or tier
carries no tenant or tier claim, so it needs no allowance for one; a key
without roles needs none for roles."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from vocelio_contract.apikeys import ApiKeyRecord
from vocelio_operator.translation.tenancy.claims import namespace_matches


@dataclass(frozen=True)
class KeyAllowance:
    namespaces: tuple[str, ...]
    tenants: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    tiers: tuple[str, ...] = ()

    def why_not(self, record: ApiKeyRecord) -> str | None:
        if record.tenant is not None and not _allowed(self.tenants, record.tenant):
            return f"tenant {record.tenant!r} is not allowed (allowed: {_listed(self.tenants)})"
        extra = [role for role in record.roles if not _allowed(self.roles, role)]
        if extra:
            return f"role {extra[0]!r} is not allowed (allowed: {_listed(self.roles)})"
        if record.tier is not None and not _allowed(self.tiers, record.tier):
            return f"tier {record.tier!r} is not allowed (allowed: {_listed(self.tiers)})"
        return None


def _allowed(values: Sequence[str], value: str) -> bool:
    return "*" in values or value in values


def _listed(values: Sequence[str]) -> str:
    return ", ".join(values) if values else "none"


@dataclass(frozen=True)
class KeyPolicy:
    allowances: tuple[KeyAllowance, ...] = ()
    unrestricted: frozenset[str] = frozenset()

    def refusal(self, namespace: str, record: ApiKeyRecord) -> str | None:
        """Why the key of a Secret in `namespace` may not be published, or None. The message
        names the key's id and metadata only, never its hash."""
        if namespace in self.unrestricted:
            return None
        matching = [a for a in self.allowances if namespace_matches(a.namespaces, namespace)]
        if not matching:
            return (f"API key {record.id} not published: namespace {namespace} has no API-key allowance "
                    "(tenancy.apiKeys.allowances)")
        reasons = [a.why_not(record) for a in matching]
        if any(r is None for r in reasons):
            return None
        return f"API key {record.id} not published: {reasons[0]} for namespace {namespace}"
