"""The plain listener's HTTP→HTTPS redirect (`tls.redirect`): which requests
are redirected and where to. Pure; asked by `pipeline.handling.GatewayHandler`
for each request on the plain listener when the redirect is on (never on the
admin or the TLS listener).

* 308 Permanent Redirect (RFC 9110 §15.4.9): the method and body are kept, so
  a POST is not turned into a GET as 301/302 would allow;
* the Location is `https://` + the request's own host (the one `Host` the wire
  rules accepted, normalised by the one authority parser; its port dropped) +
  the HTTPS port when it is not 443 + the request target as sent (path and
  query, still percent-encoded): nothing a client sends can make it point at
  another host than the one it asked for, and with `trusted_hosts` only a
  trusted host is redirected (others are refused first);
* the probes (`/health`, `/livez`, `/readyz` by default: kubelets and load
  balancers probe over plain HTTP) and any `exempt_paths` are served as they
  are; an entry ending in `/` exempts a prefix;
* a request a trusted proxy already received over HTTPS (its one
  `X-Forwarded-Proto: https`) is not redirected: redirecting it would loop.
"""

from __future__ import annotations

from collections.abc import Sequence

from vocelio_proxy.policy.authority import parse_authority


class HttpsRedirect:
    """The redirect decision for one listener's settings."""

    __slots__ = ("_exact", "_port_part", "_prefixes")

    def __init__(self, https_port: int, exempt_paths: Sequence[str]) -> None:
        self._port_part = "" if https_port == 443 else f":{https_port}"
        self._exact = frozenset(p for p in exempt_paths if not p.endswith("/"))
        self._prefixes = tuple(p for p in exempt_paths if p.endswith("/"))

    def exempt(self, path: str) -> bool:
        return path in self._exact or path.startswith(self._prefixes)

    def location(self, host: str, target: str) -> str | None:
        """The https URL for a request with this `Host` and origin-form target, or None
        when `host` is not an authority (the request is refused as a bad Host instead)."""
        parsed = parse_authority(host)
        if parsed is None:
            return None
        return f"https://{parsed.host}{self._port_part}{target}"


def forwarded_https(forwarded_proto: str | None) -> bool:
    """A trusted proxy's one X-Forwarded-Proto says the client used https."""
    return forwarded_proto is not None and forwarded_proto.strip().lower() == "https"
