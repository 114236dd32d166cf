"""The admin-owned tenancy settings (chart values `tenancy:` rendered into the
operator's `VOCELIO_OPERATOR_TENANCY`, docs/multi-tenancy.md) and the policies
built from them. Pure; `OperatorSettings` embeds `TenancySettings`, the
reconciler builds one `TenancyPolicy` per pass from them and the grants it
watches, and hands it to the renderer.

Field names are the chart's (camelCase) with snake_case accepted too. The
defaults keep the quickstart's behaviour for prefixes (any namespace, first
come first served) and are closed where a default cannot be safe: static
endpoints off, API keys read only from the gateway's namespace, RateTiers (which
apply gateway-wide) enforced only from the gateway's namespace."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from vocelio_contract.hosts import host_problem
from vocelio_contract.paths import DEFAULT_POLICY, PathError, normalize_path, route_key
from vocelio_operator.translation.tenancy.addresses import (
    DEFAULT_DENY_CIDRS,
    AddressPolicy,
    GatewayFence,
    parse_networks,
)
from vocelio_operator.translation.tenancy.allowances import KeyAllowance, KeyPolicy
from vocelio_operator.translation.tenancy.claims import ClaimPolicy, ClaimRule
from vocelio_operator.translation.tenancy.grants import ReferenceGrant
from vocelio_operator.translation.tenancy.tiers import TierPolicy

_NAMESPACE_PATTERN = re.compile(r"^[a-z0-9*?-]{1,63}$")
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
NamespacePattern = Annotated[str, Field(pattern=_NAMESPACE_PATTERN.pattern)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True)


class StaticEndpointSettings(_Model):
    enabled: bool = Field(False, description="Accept staticEndpoints in cluster mode at all.")
    deny_cidrs: list[str] = Field(default_factory=lambda: list(DEFAULT_DENY_CIDRS),
                                  description="Ranges never accepted as backend addresses (static or discovered).")

    @field_validator("deny_cidrs")
    @classmethod
    def _networks(cls, cidrs: list[str]) -> list[str]:
        parse_networks(cidrs)
        return cidrs


class ClaimRuleSettings(_Model):
    namespaces: list[NamespacePattern] = Field(min_length=1)
    prefixes: list[str] = Field(min_length=1)
    hosts: list[str] = Field(default_factory=list, description="Host names or `*.` wildcards the rule's prefixes "
                                                               "may be claimed on; empty: services without hosts.")

    @field_validator("hosts")
    @classmethod
    def _host_patterns(cls, hosts: list[str]) -> list[str]:
        for host in hosts:
            problem = host_problem(host)
            if problem is not None:
                raise ValueError(problem)
        return hosts

    @field_validator("prefixes")
    @classmethod
    def _prefixes_route(cls, prefixes: list[str]) -> list[str]:
        for prefix in prefixes:
            try:
                route_key(prefix, DEFAULT_POLICY)
                canonical = normalize_path(prefix, DEFAULT_POLICY).rstrip("/") or "/"
            except PathError as exc:
                raise ValueError(f"prefix {prefix!r} is not a routable path prefix ({exc})") from None
            if canonical != (prefix.rstrip("/") or "/"):
                # A rule must mean what it says: `/a/%2e%2e/b` is routed as `/b`.
                raise ValueError(f"prefix {prefix!r} is routed as {canonical!r}: write it that way")
        return prefixes


class PrefixClaimSettings(_Model):
    restricted: bool = Field(False, description="False: any namespace claims any free prefix (first come, "
                                                "first served). True: only what a rule allows.")
    rules: list[ClaimRuleSettings] = Field(default_factory=list)


class KeyAllowanceSettings(_Model):
    namespaces: list[NamespacePattern] = Field(min_length=1)
    tenants: list[str] = Field(default_factory=list)
    roles: list[str] = Field(default_factory=list)
    tiers: list[str] = Field(default_factory=list)


class ApiKeySettings(_Model):
    namespaces: list[str] = Field(
        default_factory=list,
        description="Namespaces besides the gateway's whose API-key Secrets are read (each needs its own Role).")
    allowances: list[KeyAllowanceSettings] = Field(default_factory=list)

    @field_validator("namespaces")
    @classmethod
    def _names(cls, names: list[str]) -> list[str]:
        bad = [n for n in names if not _NAMESPACE.fullmatch(n)]
        if bad:
            raise ValueError(f"{bad[0]!r} is not a namespace name (an explicit list: no patterns)")
        return names


class RateTierSettings(_Model):
    namespaces: list[NamespacePattern] = Field(
        default_factory=list,
        description="Namespaces besides the gateway's whose RateTiers are enforced (tiers apply gateway-wide).")


class TenancySettings(_Model):
    static_endpoints: StaticEndpointSettings = Field(default_factory=lambda: StaticEndpointSettings())
    prefix_claims: PrefixClaimSettings = Field(default_factory=lambda: PrefixClaimSettings())
    api_keys: ApiKeySettings = Field(default_factory=lambda: ApiKeySettings())
    rate_tiers: RateTierSettings = Field(default_factory=lambda: RateTierSettings())


@dataclass(frozen=True)
class TenancyPolicy:
    """Everything the renderer needs to judge tenants' resources."""

    addresses: AddressPolicy = field(default_factory=AddressPolicy)
    claims: ClaimPolicy = field(default_factory=ClaimPolicy)
    grants: Mapping[str, Sequence[ReferenceGrant]] = field(default_factory=dict)
    tiers: TierPolicy = field(default_factory=TierPolicy)
    fence: GatewayFence = field(default_factory=GatewayFence)


def address_policy(settings: TenancySettings) -> AddressPolicy:
    return AddressPolicy(static_endpoints=settings.static_endpoints.enabled,
                         deny=parse_networks(settings.static_endpoints.deny_cidrs))


def claim_policy(settings: TenancySettings, gateway_namespace: str) -> ClaimPolicy:
    rules = tuple(ClaimRule(tuple(r.namespaces), tuple(r.prefixes), tuple(r.hosts))
                  for r in settings.prefix_claims.rules)
    return ClaimPolicy(settings.prefix_claims.restricted, rules, frozenset({gateway_namespace}))


def key_policy(settings: TenancySettings, gateway_namespace: str) -> KeyPolicy:
    allowances = tuple(KeyAllowance(tuple(a.namespaces), tuple(a.tenants), tuple(a.roles), tuple(a.tiers))
                       for a in settings.api_keys.allowances)
    return KeyPolicy(allowances, frozenset({gateway_namespace}))


def key_namespaces(settings: TenancySettings, gateway_namespace: str) -> list[str]:
    """Where API-key Secrets are read: the gateway's namespace, then the explicit list."""
    return list(dict.fromkeys([gateway_namespace, *settings.api_keys.namespaces]))


def tier_policy(settings: TenancySettings, gateway_namespace: str) -> TierPolicy:
    return TierPolicy(True, tuple(settings.rate_tiers.namespaces), frozenset({gateway_namespace}))


def tenancy_policy(settings: TenancySettings, gateway_namespace: str,
                   grants: Mapping[str, Sequence[ReferenceGrant]],
                   addresses: AddressPolicy | None = None, gateway_endpoints: Iterable[str] = ()) -> TenancyPolicy:
    """The policy for one render; `addresses` lets a long-lived caller keep one address policy
    (and its verdict memo) across renders; `gateway_endpoints` are the addresses of the
    EndpointSlices in the gateway's namespace (no other namespace's backend may use them)."""
    fence = GatewayFence.of(gateway_namespace, gateway_endpoints)
    return TenancyPolicy(addresses or address_policy(settings), claim_policy(settings, gateway_namespace), grants,
                         tier_policy(settings, gateway_namespace), fence)
