"""Who may claim which path prefix: the admin-owned prefix claim policy. Pure;
the renderer asks `ClaimPolicy.refusal` for each VocelioService before the
service may claim anything, so a refused claim never routes and never blocks a
prefix for anybody else.

Prefixes are compared as the router compares them (`vocelio_contract.paths.route_key`:
canonical, decoded, case-folded), on segment boundaries: a rule for
`/api/v1/team-a` allows `/api/v1/team-a` and `/api/v1/Team-A/x`, never
`/api/v1/team-ab`. Namespace patterns are shell-style (`team-*`, `*`), matched
against the whole namespace name (namespace names hold no pattern characters)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

from vocelio_contract.paths import DEFAULT_POLICY, PathPolicy, route_key


def namespace_matches(patterns: Sequence[str], namespace: str) -> bool:
    return any(fnmatchcase(namespace, pattern) for pattern in patterns)


def under(key: str, parent: str) -> bool:
    """`key` is `parent` or below it on a segment boundary (both route keys)."""
    return key == parent or parent == "/" or key.startswith(parent + "/")


@dataclass(frozen=True)
class ClaimRule:
    """Namespaces matching `namespaces` may claim `prefixes` and anything below them."""

    namespaces: tuple[str, ...]
    prefixes: tuple[str, ...]


@dataclass(frozen=True)
class ClaimPolicy:
    """`restricted=False` is first come, first served for every namespace (the default).
    Namespaces in `unrestricted` (the gateway's own) may always claim anything."""

    restricted: bool = False
    rules: tuple[ClaimRule, ...] = ()
    unrestricted: frozenset[str] = frozenset()

    def refusal(self, namespace: str, prefixes: Sequence[str], policy: PathPolicy = DEFAULT_POLICY) -> str | None:
        """Why `namespace` may not claim one of `prefixes` (as written; already valid under
        `policy`), or None when it may claim all of them."""
        if not self.restricted or namespace in self.unrestricted:
            return None
        allowed = [(p, route_key(p, policy)) for rule in self.rules if namespace_matches(rule.namespaces, namespace)
                   for p in rule.prefixes]
        for prefix in prefixes:
            key = route_key(prefix, policy)
            if not any(under(key, parent) for _, parent in allowed):
                if not allowed:
                    return (f"namespace {namespace} may not claim path prefixes (prefix {prefix}): "
                            "no prefix claim rule names it")
                listed = ", ".join(sorted({p for p, _ in allowed}))
                return f"namespace {namespace} may not claim prefix {prefix}: it may claim only {listed}"
        return None
