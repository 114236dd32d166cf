"""Longest-prefix routing from a canonical path (`paths.normalize_path`) to a
service, with optional prefix rewrite. Built once per config by `Router.build`
(from `runtime.build_runtime`); `Router.match` is called by the proxy handler
for every request. Pure.

A prefix matches on segment boundaries: `/api/v1/billing` matches
`/api/v1/billing` and `/api/v1/billing/x`, never `/api/v1/billingx`. Prefixes
are canonicalised with the same policy as request paths, so both are compared
in one form, and the upstream path is always the canonical path (rewritten).

Letter case (`PathPolicy.case`): with `reject-mismatch` (the default) a path
whose route would change if letter case were ignored is refused, so a
case-sensitive and a case-insensitive backend both read it under the route
whose policy was applied: `/api/v1/x/ADMIN` with routes `/api/v1/x` (public)
and `/api/v1/x/admin` (protected) is neither served publicly nor guessed.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import NamedTuple
from urllib.parse import unquote

from .config import Service
from .paths import DEFAULT_POLICY, PathError, PathPolicy, normalize_path

_NON_ASCII_ESCAPE = re.compile(r"%[89A-Fa-f][0-9A-Fa-f]")


class RouteMatch(NamedTuple):
    service: Service
    prefix: str
    upstream_path: str


class _Folded(NamedTuple):
    """The routes of one case-folded prefix: None when different services claim it."""

    service: Service | None
    spellings: tuple[str, ...]


class _UnicodePrefix(NamedTuple):
    """A prefix with non-ASCII letters, which ASCII case folding cannot compare."""

    folded_text: str
    segments: int
    key: str


class Router:
    def __init__(self, table: dict[str, Service | None], policy: PathPolicy = DEFAULT_POLICY,
                 refused: Sequence[str] = ()) -> None:
        #: Canonical prefix -> service; None marks two services claiming one canonical prefix.
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
        self._unicode = [
            _UnicodePrefix(_unicode_fold(prefix), prefix.count("/"), prefix)
            for prefix in table if self._folding and _NON_ASCII_ESCAPE.search(prefix)]
        #: Configured prefixes the path policy refuses: no request can reach them.
        self.refused_prefixes = list(refused)
        # Distinct prefix lengths, longest first: a lookup probes at most one
        # dict entry per length instead of scanning every route.
        self._lengths = sorted({len(p) for p in table}, reverse=True)

    @classmethod
    def build(cls, services: list[Service], policy: PathPolicy = DEFAULT_POLICY) -> Router:
        table: dict[str, Service | None] = {}
        refused: list[str] = []
        for svc in services:
            for prefix in svc.prefixes:
                try:
                    canonical = normalize_path(prefix, policy)
                except PathError:
                    refused.append(prefix)
                    continue
                key = canonical.rstrip("/") or "/"
                prior = table.get(key, svc)
                table[key] = svc if prior is svc else None
        return cls(table, policy, refused)

    @property
    def prefixes(self) -> list[str]:
        return sorted(self._table)

    @property
    def ambiguous_prefixes(self) -> list[str]:
        """Prefixes that different services claim once canonicalised (or, unless
        case is sensitive, once letter case is ignored): requests under them are refused."""
        if self._folding:
            return sorted(p for entry in self._folded.values() if entry.service is None for p in entry.spellings)
        return sorted(p for p, svc in self._table.items() if svc is None)

    def match(self, path: str) -> RouteMatch | None:
        """The route of a canonical path, or None (also when `resolve` refuses it)."""
        try:
            return self.resolve(path)
        except PathError:
            return None

    def resolve(self, path: str) -> RouteMatch | None:
        """The route of a canonical path, None when no route matches; raises
        `PathError` when the route depends on how a backend reads letter case."""
        if not self._folding:
            return self._exact(path)
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
                raise PathError("routes differ only by letter case here; the path is ambiguous")
            prefix = path[:length]
            if prefix not in entry.spellings:
                if self._case == "reject-mismatch":
                    raise PathError(f"the path falls under {entry.spellings[0]} only when letter case is ignored")
                prefix = entry.spellings[0]
            result = RouteMatch(svc, prefix, rewrite_path(path, prefix, svc.rewrite))
            break
        if self._unicode and "%" in path:
            self._check_unicode(path, result)
        return result

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

    def _check_unicode(self, path: str, result: RouteMatch | None) -> None:
        """Refuse a path that a Unicode case-insensitive backend (.NET, Java) would
        read under a non-ASCII prefix more specific than the route chosen."""
        text = _unicode_fold(path)
        chosen = result.prefix.lower() if result is not None else None
        depth = result.prefix.count("/") if result is not None and result.prefix != "/" else 0
        for prefix in self._unicode:
            if text != prefix.folded_text and not text.startswith(prefix.folded_text + "/"):
                continue
            if prefix.key.lower() != chosen and prefix.segments >= depth:
                raise PathError("the path falls under another route when Unicode letter case is ignored")


def _unicode_fold(canonical: str) -> str:
    """The decoded, compatibility-normalised, case-folded text of a canonical path."""
    return unicodedata.normalize("NFKC", unquote(canonical)).upper().lower()


def rewrite_path(path: str, prefix: str, rewrite: str | None) -> str:
    if rewrite is None:
        return path
    rest = path[len(prefix):] if prefix != "/" else path
    if not rest:
        return rewrite
    base = rewrite.rstrip("/")
    return f"{base}{rest}" if rest.startswith("/") else f"{base}/{rest}"
