"""Which certificate answers a TLS ClientHello: the server name (SNI) matched
against the DNS names (subjectAltName) of the loaded certificates. Pure; built
by `process.tls_certificates` each time the certificate set changes and asked by
`wire.tls.TlsEdge.sni_callback` once per handshake.

The rules (RFC 6125 §6.4 as browsers apply it; nginx and Envoy choose alike):

* names compare case-insensitively, without one trailing dot (`API.Example.com.`
  is `api.example.com`);
* an exact name wins over a wildcard, so the most specific certificate
  answers (a wildcard covers one label, so at most one wildcard suffix can
  match a name: `a.eu.example.com` is `*.eu.example.com`'s, never
  `*.example.com`'s);
* a wildcard `*.example.com` covers exactly one label: `a.example.com`, not
  `example.com` and not `a.b.example.com`; only a leading `*.` label is a
  wildcard (`a*.example.com` and `*.com`-style public suffixes of one label are
  not);
* when two certificates claim the same name, the first one listed keeps it;
* nothing matches, no SNI at all, an IP address literal (RFC 6066 forbids it
  in SNI) or a name that is not a DNS name: the default certificate.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")

# A DNS name: labels of letters, digits and hyphens (underscores seen in the wild
# are tolerated), 1-63 characters each, at most 253 in all.
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")


def normalise_name(name: str) -> str | None:
    """`name` lower-case without one trailing dot, or None when it is not a DNS name."""
    name = name.lower()
    if name.endswith("."):
        name = name[:-1]
    if not name or len(name) > 253:
        return None
    labels = name.split(".")
    if not all(_LABEL.fullmatch(label) for label in labels):
        return None
    if all(label.isdigit() for label in labels):
        return None  # an IPv4 literal is never a server name
    return name


def normalise_pattern(pattern: str) -> str | None:
    """A certificate DNS name as a match pattern: an exact name, or `*.` and a
    suffix of at least two labels; None when it is neither."""
    if pattern.startswith("*."):
        suffix = normalise_name(pattern[2:])
        if suffix is None or "." not in suffix:
            return None
        return "*." + suffix
    return normalise_name(pattern)


class SniTable(Generic[T]):
    """Server name to certificate, most specific first (see the module doc).
    `entries` are (certificate, its DNS names) in priority order; `default`
    answers everything else."""

    __slots__ = ("_exact", "_wildcards", "default")

    def __init__(self, entries: Iterable[tuple[T, Sequence[str]]], default: T) -> None:
        self.default = default
        self._exact: dict[str, T] = {}
        self._wildcards: dict[str, T] = {}
        for item, names in entries:
            for raw in names:
                pattern = normalise_pattern(raw)
                if pattern is None:
                    continue
                if pattern.startswith("*."):
                    self._wildcards.setdefault(pattern[2:], item)
                else:
                    self._exact.setdefault(pattern, item)

    def choose(self, server_name: str | None) -> T:
        """The certificate for a ClientHello's server name (None: no SNI)."""
        if server_name is None:
            return self.default
        name = normalise_name(server_name)
        if name is None:
            return self.default
        found = self._exact.get(name)
        if found is not None:
            return found
        # One label only: the wildcard's suffix is the name minus its first label.
        _, dot, suffix = name.partition(".")
        if dot:
            found = self._wildcards.get(suffix)
            if found is not None:
                return found
        return self.default

    def names(self) -> list[str]:
        """Every name served, exact then wildcard (for /status and logs)."""
        return sorted(self._exact) + sorted("*." + s for s in self._wildcards)
