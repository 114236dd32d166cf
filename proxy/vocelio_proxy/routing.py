"""Longest-prefix routing from a normalised path to a service, with optional
prefix rewrite. Built once per config by `Router.build`; used by the proxy
handler. Pure.

A prefix matches on segment boundaries: `/api/v1/billing` matches
`/api/v1/billing` and `/api/v1/billing/x`, never `/api/v1/billingx`.
"""

from __future__ import annotations

from typing import NamedTuple

from .config import Service


class RouteMatch(NamedTuple):
    service: Service
    prefix: str
    upstream_path: str


class Router:
    def __init__(self, table: dict[str, Service]) -> None:
        self._table = table
        # Distinct prefix lengths, longest first: a lookup probes at most one
        # dict entry per length instead of scanning every route.
        self._lengths = sorted({len(p) for p in table}, reverse=True)

    @classmethod
    def build(cls, services: list[Service]) -> Router:
        table: dict[str, Service] = {}
        for svc in services:
            for prefix in svc.prefixes:
                table[prefix.rstrip("/") or "/"] = svc
        return cls(table)

    @property
    def prefixes(self) -> list[str]:
        return sorted(self._table)

    def match(self, path: str) -> RouteMatch | None:
        """Find the service for a normalised path, or None."""
        for length in self._lengths:
            if len(path) < length:
                continue
            candidate = path[:length]
            if len(path) > length and path[length] != "/" and candidate != "/":
                continue
            svc = self._table.get(candidate)
            if svc is not None:
                return RouteMatch(svc, candidate, rewrite_path(path, candidate, svc.rewrite))
        return None


def rewrite_path(path: str, prefix: str, rewrite: str | None) -> str:
    if rewrite is None:
        return path
    rest = path[len(prefix):] if prefix != "/" else path
    if not rest:
        return rewrite
    base = rewrite.rstrip("/")
    return f"{base}{rest}" if rest.startswith("/") else f"{base}/{rest}"
