"""Host and longest-prefix routing from a request's host (`hosts.request_host`) and
canonical path (`paths.normalize_path`) to a service, with optional prefix rewrite.
Built once per config by `Router.build` (from `routing_state.build_runtime`);
`Router.resolve` is called by the proxy handler for every request. Pure.

Hosts (Gateway API HTTPRoute semantics, docs/host-routing.md): the services naming
a host form one `PathRouter`; services naming none form the default one. A request
is tried against its host's groups, most specific first: the exact name (a dict
lookup), then each `*.` wildcard from the longest suffix down (one dict lookup per
label stripped), then the default group. The first group with a route for the path
serves it (a gateway endpoint path, such as /health, goes to the gateway unless a
service naming the request's host routes it: `claims`); a group whose routes do not
match the path falls through to the next, as Gateway API merges the rules of every
route whose hostnames match. A refusal (`PathError`) in any group tried is final.
A group passed over also refuses a path that a suffix-stripping backend would read
under one of its routes, since that group would have taken the path read that way. With no host named anywhere, only the
default group exists and a lookup costs what it did before hosts.

A prefix matches on segment boundaries: `/api/v1/billing` matches
`/api/v1/billing` and `/api/v1/billing/x`, never `/api/v1/billingx`. Prefixes
are canonicalised with the same policy as request paths, so both are compared
in one form, and the upstream path is always the canonical path (rewritten).
Prefixes of different services with one `paths.route_key` (they differ only by
letter case, escapes or compatibility forms) make every path under them
ambiguous: refused. The renderer uses the same key, so it rejects the newer of
two such services before a proxy ever sees both. A path that reaches a prefix with
escapes, '+' or ';' only once decoded (`%2B` read as `+`, Unicode case) and would
otherwise be routed under a shallower prefix is refused.

Letter case (`PathPolicy.case`): with `reject-mismatch` (the default) a path
whose route would change if letter case were ignored is refused, so a
case-sensitive and a case-insensitive backend both read it under the route
whose policy was applied: `/api/v1/x/ADMIN` with routes `/api/v1/x` (public)
and `/api/v1/x/admin` (protected) is neither served publicly nor guessed.

Format suffixes (`PathPolicy.format_suffix`): Rails (`(.:format)`) and Spring
suffix pattern matching serve `/api/v1/x/admin.json` as `/api/v1/x/admin`. With
`reject` (the default) a path is refused when stripping a `.suffix` from one of
its segments would put it under a route more specific (deeper) than the one
chosen. Only paths with a '.' pay for this check, and only segments whose
stripped text is a segment of some route at that depth (precomputed) are tried.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Container, Sequence
from typing import NamedTuple

from vocelio_contract.config import Service
from vocelio_contract.paths import (
    DEFAULT_POLICY,
    PathError,
    PathPolicy,
    decode_path,
    fold_path,
    normalize_path,
    route_key,
)

# What a canonical path may still spell in two ways a decoding backend reads alike: an
# escape that stays encoded (non-ASCII, `%2B`, `%3B`, ...) and its raw twin ('+', ';').
_SPELLED = re.compile(r"[%+;]")


class RouteMatch:
    """A routed request: its service, the prefix that matched, the path sent upstream and
    the configured host the route matched on ("" for the default host). Built per request:
    a plain class (a direct allocation when compiled; a NamedTuple goes through its Python
    `__new__`, about seven times slower). Read-only by convention."""

    __slots__ = ("host", "prefix", "service", "upstream_path")

    def __init__(self, service: Service, prefix: str, upstream_path: str, host: str = "") -> None:
        self.service = service
        self.prefix = prefix
        self.upstream_path = upstream_path
        self.host = host

    def on_host(self, host: str) -> RouteMatch:
        """The same match, made on the configured host `host`."""
        return RouteMatch(self.service, self.prefix, self.upstream_path, host)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RouteMatch) and (self.service, self.prefix, self.upstream_path, self.host) == (
            other.service, other.prefix, other.upstream_path, other.host)

    def __hash__(self) -> int:
        return hash((self.service.id, self.prefix, self.upstream_path, self.host))

    def __repr__(self) -> str:
        return (f"RouteMatch(service={self.service.id!r}, prefix={self.prefix!r}, "
                f"upstream_path={self.upstream_path!r}, host={self.host!r})")


class _Folded(NamedTuple):
    """The routes of one case-folded prefix: None when different services claim it."""

    service: Service | None
    spellings: tuple[str, ...]


class _DecodedPrefix(NamedTuple):
    """A prefix with escapes, '+' or ';': compared decoded (and Unicode case-folded unless
    case is sensitive), since the path can reach it in another spelling."""

    folded_text: str
    segments: int


class PathRouter:
    """The longest-prefix routes of one host group."""

    def __init__(self, table: dict[str, Service | None], policy: PathPolicy = DEFAULT_POLICY,
                 refused: Sequence[str] = ()) -> None:
        #: Canonical prefix -> service; None marks a prefix whose route key several services claim.
        self._table = table
        self._case = policy.case
        self._folding = policy.case != "sensitive"
        folded: dict[str, _Folded] = {}
        for prefix, svc in table.items():
            key = prefix.lower()
            prior = folded.get(key)
            if prior is None:
                folded[key] = _Folded(svc, (prefix,))
            elif prior.service is svc and svc is not None:
                folded[key] = _Folded(svc, (*prior.spellings, prefix))
            else:
                folded[key] = _Folded(None, (*prior.spellings, prefix))
        self._folded = folded
        self._decode = fold_path if self._folding else decode_path
        self._decoded = [_DecodedPrefix(self._decode(prefix), _depth(prefix))
                         for prefix in table if _SPELLED.search(prefix)]
        #: Configured prefixes the path policy refuses: no request can reach them.
        self.refused_prefixes = list(refused)
        # Distinct prefix lengths, longest first: a lookup probes at most one
        # dict entry per length instead of scanning every route.
        self._lengths = sorted({len(p) for p in table}, reverse=True)
        # The segment texts routes have at each depth (as compared: lower-cased unless
        # case is sensitive; also decoded and folded when escaped): a '.suffix' whose
        # stripped segment is none of these cannot change the route.
        depths: list[set[str]] = []
        for prefix in table:
            for i, seg in enumerate(prefix[1:].split("/") if prefix != "/" else ()):
                if i == len(depths):
                    depths.append(set())
                depths[i].add(seg.lower() if self._folding else seg)
                if _SPELLED.search(seg):
                    depths[i].add(self._decode(seg))
        self._route_segments = tuple(frozenset(d) for d in depths)
        self._suffix_depth = len(depths) if policy.format_suffix == "reject" else 0
        # A cut that reaches a route ends where that route's segment ends, so (letter case
        # aside, which keeps lengths in a canonical path) no '.' after the longest prefix can
        # matter. Decoding can change lengths: then every '.' is looked at.
        self._suffix_reach = max(self._lengths, default=0) if not self._decoded else sys.maxsize

    @classmethod
    def build(cls, services: list[Service], policy: PathPolicy = DEFAULT_POLICY) -> PathRouter:
        claims: dict[str, Service | None] = {}  # route key -> its service; None when several claim it
        entries: list[tuple[str, str, Service]] = []
        refused: list[str] = []
        for svc in services:
            for prefix in svc.prefixes:
                try:
                    canonical = normalize_path(prefix, policy)
                    key = route_key(prefix, policy)
                except PathError:
                    refused.append(prefix)
                    continue
                entries.append((canonical.rstrip("/") or "/", key, svc))
                prior = claims.get(key, svc)
                claims[key] = svc if prior is svc else None
        return cls({path: claims[key] for path, key, _ in entries}, policy, refused)

    @property
    def prefixes(self) -> list[str]:
        return sorted(self._table)

    @property
    def ambiguous_prefixes(self) -> list[str]:
        """Prefixes that different services claim once compared by `paths.route_key` (letter
        case ignored unless case is sensitive): requests under them are refused."""
        return sorted(p for p, svc in self._table.items() if svc is None)

    def match(self, path: str) -> RouteMatch | None:
        """The route of a canonical path, or None (also when `resolve` refuses it)."""
        try:
            return self.resolve(path)
        except PathError:
            return None

    def resolve(self, path: str) -> RouteMatch | None:
        """The route of a canonical path, None when no route matches; raises
        `PathError` when the route depends on how a backend reads letter case or
        format suffixes."""
        if not self._folding:
            result = self._exact(path)
        else:
            folded = path.lower()
            result = None
            for length in self._lengths:
                if len(path) < length:
                    continue
                if len(path) > length and path[length] != "/" and length > 1:
                    continue
                entry = self._folded.get(folded[:length])
                if entry is None:
                    continue
                svc = entry.service
                if svc is None:
                    raise PathError("routes differ only by letter case or spelling here; the path is ambiguous")
                prefix = path[:length]
                if prefix not in entry.spellings:
                    if self._case == "reject-mismatch":
                        raise PathError(f"the path falls under {entry.spellings[0]} only when letter case is "
                                        "ignored")
                    prefix = entry.spellings[0]
                result = RouteMatch(svc, prefix, rewrite_path(path, prefix, svc.rewrite))
                break
        if self._decoded and _SPELLED.search(path):
            self._check_decoded(path, result)
        if "." in path and result is not None and self._suffix_depth:
            self._check_suffixes(path, _depth(result.prefix))
        return result

    def check_passed_over(self, path: str) -> None:
        """Raise `PathError` when a backend stripping a format suffix would read `path`
        under one of this group's routes, after `resolve` found none here and a less
        specific host group took the path."""
        if "." in path and self._suffix_depth:
            self._check_suffixes(path, -1)

    def _exact(self, path: str) -> RouteMatch | None:
        table = self._table
        for length in self._lengths:
            if len(path) < length:
                continue
            candidate = path[:length]
            if len(path) > length and path[length] != "/" and candidate != "/":
                continue
            if candidate in table:
                svc = table[candidate]
                if svc is None:
                    raise PathError("two routes claim this path once canonicalised")
                return RouteMatch(svc, candidate, rewrite_path(path, candidate, svc.rewrite))
        return None

    def _check_decoded(self, path: str, result: RouteMatch | None) -> None:
        """Refuse a path that a decoding backend (`%2B` read as `+`), or a Unicode
        case-insensitive one (.NET, Java), would read under a prefix with escapes, '+' or
        ';' at least as specific as the route chosen and other than it."""
        text = self._decode(path)
        chosen = self._decode(result.prefix) if result is not None else None
        depth = _depth(result.prefix) if result is not None else 0
        for prefix in self._decoded:
            if text != prefix.folded_text and not text.startswith(prefix.folded_text + "/"):
                continue
            if prefix.folded_text != chosen and prefix.segments >= depth:
                raise PathError("the path falls under another route once decoded or when Unicode letter case "
                                "is ignored")

    def _check_suffixes(self, path: str, chosen_depth: int) -> None:
        """Refuse a path that a backend stripping a format suffix from one of its segments
        (Rails `(.:format)`, Spring suffix pattern matching: `admin.json` read as `admin`)
        would read under a deeper route than `result`. Every '.' of a segment but a
        leading one is a place such a backend may cut (`a.tar.gz`: `a`, `a.tar`); a '.'
        in a segment deeper than every route cannot change the route and ends the
        check. A route at the depth of the one chosen or above is no more specific: the
        literal spelling still wins there. `chosen_depth` is -1 when the route chosen is
        in a less specific host group (every route here is more specific)."""
        dot = path.find(".")
        while dot != -1:
            if dot > self._suffix_reach:
                return
            index = path.count("/", 0, dot) - 1
            if index >= self._suffix_depth:
                return
            start = path.rfind("/", 0, dot) + 1
            if dot > start and self._is_route_segment(index, path[start:dot]):
                end = path.find("/", dot)
                candidate = path[:dot] + (path[end:] if end != -1 else "")
                if self._reading_depth(candidate) > chosen_depth:
                    cut = path[dot:end] if end != -1 else path[dot:]
                    raise PathError(f"the path falls under a more specific route once a backend strips "
                                    f"the format suffix {cut!r}")
            dot = path.find(".", dot + 1)

    def _reading_depth(self, path: str) -> int:
        """The depth of the most specific route a backend may read `path` under (exactly,
        or ignoring ASCII or Unicode letter case unless case is sensitive); -1 for none."""
        best = -1
        table: Container[str] = self._folded if self._folding else self._table
        folded = path.lower() if self._folding else path
        for length in self._lengths:
            if len(path) < length or (len(path) > length and path[length] != "/" and length > 1):
                continue
            if folded[:length] in table:
                best = _depth(folded[:length])
                break
        if self._decoded and _SPELLED.search(path):
            text = self._decode(path)
            for prefix in self._decoded:
                if text == prefix.folded_text or text.startswith(prefix.folded_text + "/"):
                    best = max(best, prefix.segments)
        return best

    def _is_route_segment(self, depth: int, text: str) -> bool:
        segments = self._route_segments[depth]
        if (text.lower() if self._folding else text) in segments:
            return True
        return bool(self._decoded) and _SPELLED.search(text) is not None and self._decode(text) in segments


def _depth(prefix: str) -> int:
    """The number of segments of a canonical prefix (`/` has none)."""
    return prefix.count("/") if prefix != "/" else 0


def rewrite_path(path: str, prefix: str, rewrite: str | None) -> str:
    if rewrite is None:
        return path
    rest = path[len(prefix):] if prefix != "/" else path
    if not rest:
        return rewrite
    base = rewrite.rstrip("/")
    return f"{base}{rest}" if rest.startswith("/") else f"{base}/{rest}"


class Router:
    """Every host group of one config: the exact names, the `*.` wildcards (by the suffix
    after the `*`) and the default group (services naming no host)."""

    def __init__(self, default: PathRouter, named: dict[str, PathRouter]) -> None:
        self._default = default
        #: Configured host ("a.example.com" or "*.example.com") -> its routes.
        self._named = named
        self._wildcards = any(host.startswith("*.") for host in named)
        #: Whether any service names a host (else the request's host is never looked at); an
        #: attribute, read on every request.
        self.routes_by_host = bool(named)

    @classmethod
    def build(cls, services: list[Service], policy: PathPolicy = DEFAULT_POLICY) -> Router:
        groups: dict[str, list[Service]] = {}
        for svc in services:
            for host in svc.hosts or ("",):
                groups.setdefault(host, []).append(svc)
        default = PathRouter.build(groups.pop("", []), policy)
        return cls(default, {host: PathRouter.build(members, policy) for host, members in sorted(groups.items())})

    @property
    def hosts(self) -> list[str]:
        """The configured host names and wildcards, sorted."""
        return sorted(self._named)

    @property
    def prefixes(self) -> list[str]:
        """Every configured (canonical) prefix of every host group."""
        found = set(self._default.prefixes)
        for group in self._named.values():
            found.update(group.prefixes)
        return sorted(found)

    @property
    def ambiguous_prefixes(self) -> list[str]:
        found = set(self._default.ambiguous_prefixes)
        for group in self._named.values():
            found.update(group.ambiguous_prefixes)
        return sorted(found)

    @property
    def refused_prefixes(self) -> list[str]:
        found = set(self._default.refused_prefixes)
        for group in self._named.values():
            found.update(group.refused_prefixes)
        return sorted(found)

    def match(self, path: str, host: str = "") -> RouteMatch | None:
        """The route of a canonical path on a normalised host, or None (also when `resolve`
        refuses it)."""
        try:
            return self.resolve(path, host)
        except PathError:
            return None

    def claims(self, path: str, host: str) -> bool:
        """Whether a service naming `host` (exactly or by a wildcard) routes `path`, or
        refuses it: then a gateway endpoint at `path` gives way to the host's services."""
        if not host or not self._named:
            return False
        try:
            return self.resolve(path, host, with_default=False) is not None
        except PathError:
            return True

    def resolve(self, path: str, host: str = "", with_default: bool = True) -> RouteMatch | None:
        """The route of a canonical path on `host` (normalised by `hosts.request_host`; ""
        for none), None when no route matches; raises `PathError` when the route depends on
        how a backend reads the path (see `PathRouter.resolve`). `with_default=False`
        tries only the groups of services that name a host."""
        if not host or not self._named:
            return self._default.resolve(path) if with_default else None
        named = self._named
        passed: list[PathRouter] = []
        group = named.get(host)
        if group is not None:
            result = group.resolve(path)
            if result is not None:
                return result.on_host(host)
            passed.append(group)
        if self._wildcards:
            dot = host.find(".")
            while dot != -1:
                key = "*" + host[dot:]
                group = named.get(key)
                if group is not None:
                    result = group.resolve(path)
                    if result is not None:
                        for skipped in passed:
                            skipped.check_passed_over(path)
                        return result.on_host(key)
                    passed.append(group)
                dot = host.find(".", dot + 1)
        if not with_default:
            return None
        result = self._default.resolve(path)
        if result is not None:
            for skipped in passed:
                skipped.check_passed_over(path)
        return result
