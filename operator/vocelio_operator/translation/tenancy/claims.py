"""Who may claim which path prefix: the admin-owned prefix claim policy. Pure;
the renderer asks `ClaimPolicy.refusal` for each VocelioService before the
service may claim anything, so a refused claim never routes and never blocks a
prefix for anybody else.

Prefixes are compared as the router compares them (`vocelio_contract.paths.route_key`:
canonical, decoded, case-folded), on segment boundaries: a rule for
`/api/v1/team-a` allows `/api/v1/team-a` and `/api/v1/Team-A/x`, never
`/api/v1/team-ab`. Where rules overlap, the most specific rule covering a prefix
decides (a rule for `/` and everyone never lets a namespace claim below a prefix
another rule reserves for team-a). Namespace patterns are shell-style (`team-*`,
`*`), matched against the whole namespace name (namespace names hold no pattern
characters).

Host names (docs/host-routing.md): a rule that lists `hosts` (exact names or `*.`
wildcards, covering every name below them) bounds what a namespace may claim on those
hosts; a rule without `hosts` bounds services that name no host, as before hosts
existed. For each host a service names, the most specific host pattern covering it
decides (as the router's host precedence: exact, then the longest wildcard), then the
prefix rules of that host's rules, as above."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

from vocelio_contract.hosts import host_covers, specificity
from vocelio_contract.paths import DEFAULT_POLICY, PathPolicy, route_key


def namespace_matches(patterns: Sequence[str], namespace: str) -> bool:
    return any(fnmatchcase(namespace, pattern) for pattern in patterns)


def under(key: str, parent: str) -> bool:
    """`key` is `parent` or below it on a segment boundary (both route keys)."""
    return key == parent or parent == "/" or key.startswith(parent + "/")


@dataclass(frozen=True)
class ClaimRule:
    """Namespaces matching `namespaces` may claim `prefixes` and anything below them: on
    the `hosts` (and the names they cover) when given, else on the default host only."""

    namespaces: tuple[str, ...]
    prefixes: tuple[str, ...]
    hosts: tuple[str, ...] = ()


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
        ruled = [(p, route_key(p, policy), namespace_matches(rule.namespaces, namespace))
                 for rule in self.rules if not rule.hosts for p in rule.prefixes]
        allowed = [(p, key) for p, key, mine in ruled if mine]
        for prefix in prefixes:
            key = route_key(prefix, policy)
            if not any(under(key, parent) for _, parent in allowed):
                if not allowed:
                    return (f"namespace {namespace} may not claim path prefixes (prefix {prefix}): "
                            "no prefix claim rule names it")
                listed = ", ".join(sorted({p for p, _ in allowed}))
                return f"namespace {namespace} may not claim prefix {prefix}: it may claim only {listed}"
            # The most specific rule decides: a broad rule (`/` for everyone) never lets a namespace
            # claim below a prefix a narrower rule reserves for others, where the router's longest
            # match would hand it part of their traffic.
            covering = [(p, parent, mine) for p, parent, mine in ruled if under(key, parent)]
            deepest = max(len(parent) for _, parent, _ in covering)
            owners = [(p, mine) for p, parent, mine in covering if len(parent) == deepest]
            if not any(mine for _, mine in owners):
                return (f"namespace {namespace} may not claim prefix {prefix}: it is below {owners[0][0]}, "
                        "which a more specific prefix claim rule reserves for other namespaces")
        return None

    def host_refusal(self, namespace: str, hosts: Sequence[str], prefixes: Sequence[str],
                     policy: PathPolicy = DEFAULT_POLICY) -> str | None:
        """Why `namespace` may not claim `prefixes` on one of `hosts` (valid host names), or
        None when it may (also when `hosts` is empty: `refusal` judges the default host)."""
        if not hosts or not self.restricted or namespace in self.unrestricted:
            return None
        for host in hosts:
            covering = [(pattern, rule) for rule in self.rules for pattern in rule.hosts if host_covers(pattern, host)]
            mine = [pattern for pattern, rule in covering if namespace_matches(rule.namespaces, namespace)]
            if not mine:
                listed = sorted({p for rule in self.rules if namespace_matches(rule.namespaces, namespace)
                                 for p in rule.hosts})
                if not listed:
                    return (f"namespace {namespace} may not claim host {host}: no claim rule with hosts names "
                            "this namespace")
                return f"namespace {namespace} may not claim host {host}: it may claim only {', '.join(listed)}"
            # The most specific host pattern decides, as the router's precedence would hand its traffic.
            best = max(specificity(pattern) for pattern, _ in covering)
            owners = [rule for pattern, rule in covering if specificity(pattern) == best]
            if not any(namespace_matches(rule.namespaces, namespace) for rule in owners):
                pattern = next(p for p, _ in covering if specificity(p) == best)
                return (f"namespace {namespace} may not claim host {host}: it is covered by {pattern}, which a more "
                        "specific claim rule reserves for other namespaces")
            scoped = ClaimPolicy(True, tuple(ClaimRule(r.namespaces, r.prefixes) for r in owners))
            refused = scoped.refusal(namespace, prefixes, policy)
            if refused is not None:
                return f"on host {host}: {refused}"
        return None
