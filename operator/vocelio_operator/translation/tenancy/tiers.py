"""Which namespaces' RateTiers the gateway enforces. Pure; the renderer asks
`TierPolicy.refusal` for every RateTier before it takes its name.

A RateTier is not a tenant's own setting: the tier list is one for the whole
gateway (the matching tier with the highest priority applies to every request,
whatever its route), so a RateTier in a tenant's namespace could lift the
platform's limits for everybody, throttle every other tenant's clients, or take
the name of the platform's own tier. In cluster mode only RateTiers in the
gateway's namespace, and in the namespaces `tenancy.rateTiers.namespaces` names,
are enforced; the others are `Accepted=False` (`TierNotAllowed`) and never claim
a name. Standalone mode (no policy) enforces every tier it reads."""

from __future__ import annotations

from dataclasses import dataclass

from vocelio_operator.translation.tenancy.claims import namespace_matches


@dataclass(frozen=True)
class TierPolicy:
    """`restricted=False` enforces RateTiers from every namespace (a policy built without
    settings, as in unit tests); the operator's policy is restricted."""

    restricted: bool = False
    namespaces: tuple[str, ...] = ()
    unrestricted: frozenset[str] = frozenset()

    def refusal(self, namespace: str, name: str) -> str | None:
        """Why the RateTier `namespace/name` is not enforced, or None when it is."""
        if not self.restricted or namespace in self.unrestricted or namespace_matches(self.namespaces, namespace):
            return None
        where = ", ".join(sorted(self.unrestricted | set(self.namespaces)))
        return (f"RateTier {namespace}/{name} is not enforced: rate tiers apply to the whole gateway, so only "
                f"RateTiers in {where} are (the operator's tenancy.rateTiers.namespaces)")
