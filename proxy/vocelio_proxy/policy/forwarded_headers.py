"""Header policy for forwarded requests and returned responses: hop-by-hop
stripping, the client address through trusted proxies (hop count or CIDRs),
X-Forwarded-*, request ids, W3C trace context, and removal of client-sent
copies of the headers the gateway owns, in every spelling. Pure; called by the
request pipeline (client address, underscore policy) and the proxy handler.

What an upstream receives, whatever the client sent:

* `X-Forwarded-For`: exactly one address, the client as the gateway determined
  it (`ForwardedTrust.client`); backends reading either end of the list get it;
* `X-Forwarded-Proto` / `X-Forwarded-Host`: a trusted proxy's value when the
  request came through one (`trusted_hops > 0`; with CIDRs the pipeline removes
  the values of untrusted peers first) and the value is one `http`/`https` or
  one valid authority; else the gateway's own scheme and the `Host`;
* `X-Request-ID`: the gateway's; `traceparent`/`tracestate`: the caller's when
  valid, unchanged, else a new trace (`tracecontext`);
* `X-Vocelio-*`: only the gateway's identity headers (`identity.IDENTITY_HEADERS`);
* no client header whose name, lower-cased with `_` read as `-`, is one of the
  above, a hop-by-hop or framing header, or a credential header the gateway
  verifies (`Authorization`, `X-API-Key`): `X_Vocelio_User` and `X-Forwarded_For`
  are dropped whatever `headers_with_underscores` says.
"""

from __future__ import annotations

import ipaddress
import random
import re
from collections.abc import Iterable, Mapping, Sequence

from vocelio_proxy.policy.authority import parse_authority

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "proxy-authenticate",
    "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade",
})

#: Headers the gateway itself sets for upstreams; any client-sent copy is dropped.
IDENTITY_PREFIX = "x-vocelio-"
GATEWAY_OWNED = frozenset({"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-real-ip",
                           "forwarded", "traceparent", "tracestate", "x-request-id"})
#: Names whose underscore spellings are always dropped: a backend that reads `_` as `-`
#: (CGI/WSGI environ, many frameworks) must never see a second copy of these.
NEVER_RESPELLED = GATEWAY_OWNED | HOP_BY_HOP | {"content-length", "authorization", "x-api-key", "host"}

_DROP_UPSTREAM = HOP_BY_HOP | {"content-length"}
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_PROTOS = frozenset({"http", "https"})


# Ids come from the process PRNG, not os.urandom: they label requests and
# traces, they are not secrets, and a getrandom syscall per id costs ~8% of
# the proxy's CPU on the hot path. Drawn as bytes and hex-encoded: mypyc compiles
# an f-string with a format spec (`:024x`) to a `str.format` call that parses its
# template on every request, twice as slow.
_random_bytes = random.randbytes


def new_request_id() -> str:
    return "req_" + _random_bytes(12).hex()


def accept_request_id(value: str | None) -> str:
    """Propagate a well-formed client request id; otherwise mint one."""
    if value and _REQUEST_ID.match(value):
        return value
    return new_request_id()




def is_respelled_owned(lower: str) -> bool:
    """True for a lower-case header name with `_` that reads, with `_` as `-`, as
    a name the gateway owns (see `NEVER_RESPELLED`) or an identity header."""
    if "_" not in lower:
        return False
    name = lower.replace("_", "-")
    return name in NEVER_RESPELLED or name.startswith(IDENTITY_PREFIX)


def without_underscored(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """`headers` without any whose name contains `_` (`headers_with_underscores: drop`)."""
    return [(k, v) for k, v in headers if "_" not in k]


_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_PEER_MEMO = 1024


def _address(text: str) -> _Address | None:
    """`text` as a plain IP address, or None. Plain: what `ipaddress` reads, minus an
    IPv6 zone id (`fe80::1%eth0`): a zone names an interface of the sender's host,
    means nothing here, and is free text (quotes, braces, spaces) that would become
    a rate-limit bucket per spelling and reach headers and logs. IPv4-mapped IPv6
    is its IPv4 address; `str()` of the result is the one canonical spelling."""
    if "%" in text:
        return None
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.scope_id is not None:  # belt and braces: no zone ever passes
            return None
        if addr.ipv4_mapped is not None:
            return addr.ipv4_mapped
    return addr


class ForwardedTrust:
    """Who may tell the gateway the client's address (nginx realip style), built once
    from `trusted_proxies` (hops) and `trusted_proxy_cidrs`:

    * no hops: nobody; the client is the peer;
    * hops only: the peer and the next `hops - 1` addresses to its left in
      X-Forwarded-For are trusted proxies, whoever they are;
    * hops and CIDRs: a hop is trusted only when its address is inside one of
      the networks, and at most `hops` hops are walked.

    Walking X-Forwarded-For from the right, the first address that is not a
    trusted proxy is the client; when every address is trusted, the leftmost one
    is; an entry that is not an IP address ends the walk and the nearest
    address to its right is the client (a caller never picks an arbitrary one).
    An entry with an IPv6 zone id (`%`) is not an IP address. The address
    returned from X-Forwarded-For is canonical (`str(ipaddress.ip_address(..))`),
    so one address is one rate-limit bucket whatever its spelling.
    """

    def __init__(self, hops: int, cidrs: Sequence[str] = ()) -> None:
        self.hops = hops
        self.networks: tuple[_Network, ...] = tuple(ipaddress.ip_network(c) for c in cidrs)
        #: Whether anyone may tell the client address (a plain attribute: read per request).
        self.enabled = hops > 0
        self._peers: dict[str, bool] = {}

    def _inside(self, addr: _Address) -> bool:
        return any(addr in net for net in self.networks)

    def peer_trusted(self, peer: str) -> bool:
        """Whether the direct peer is a trusted proxy (its X-Forwarded-* count)."""
        if self.hops <= 0:
            return False
        if not self.networks:
            return True
        known = self._peers.get(peer)
        if known is None:
            # The peer comes from the kernel, not from a client: a link-local peer's zone
            # (`fe80::1%eth0`) is real there, and the CIDRs are matched without it.
            addr = _address(peer.partition("%")[0])
            known = addr is not None and self._inside(addr)
            if len(self._peers) >= _PEER_MEMO:
                self._peers.clear()
            self._peers[peer] = known
        return known

    def client(self, peer: str, forwarded_for: str | None) -> str:
        """The client address for a request from `peer` with this X-Forwarded-For."""
        if not forwarded_for or not self.peer_trusted(peer):
            return peer
        current = peer
        for walked, entry in enumerate(reversed(forwarded_for.split(",")), start=1):
            addr = _address(entry.strip())
            if addr is None:
                return current
            if walked >= self.hops or (self.networks and not self._inside(addr)):
                return str(addr)
            current = str(addr)
        return current


def client_address(remote: str, forwarded_for: str | None, trusted_hops: int) -> str:
    """The caller's address with a hop count only (see `ForwardedTrust`)."""
    return ForwardedTrust(trusted_hops).client(remote, forwarded_for)


def upstream_request_headers(  # noqa: C901 - one branch per header family the gateway owns
    client_headers: Iterable[tuple[str, str]],
    *,
    remote: str,
    scheme: str,
    host: str,
    trusted_hops: int,
    request_id: str,
    traceparent: str,
    identity: Mapping[str, str] | None = None,
    tracestate: str | None = None,
) -> list[tuple[str, str]]:
    """Build the header list sent upstream (without Content-Length/Transfer-Encoding,
    which the forwarder sets from the body it streams). `remote` is the client
    address; see the module doc for what the upstream receives."""
    out: list[tuple[str, str]] = []
    protos: list[str] = []
    hosts: list[str] = []
    listed: frozenset[str] = frozenset()
    for name, value in client_headers:
        lower = name.lower()
        if lower in _DROP_UPSTREAM:
            if lower == "connection":
                listed = listed | {t.strip().lower() for t in value.split(",")}
            continue
        if lower.startswith(IDENTITY_PREFIX):
            continue
        if lower in GATEWAY_OWNED:
            if lower == "x-forwarded-proto":
                protos.append(value)
            elif lower == "x-forwarded-host":
                hosts.append(value)
            continue
        if "_" in lower and is_respelled_owned(lower):
            continue
        out.append((name, value))
    if listed:
        out = [(k, v) for k, v in out if k.lower() not in listed]
    proto = scheme
    forwarded_host = host
    if trusted_hops > 0:
        # One field with one value from the trusted proxy; anything else is not one meaning.
        if len(protos) == 1 and protos[0].strip().lower() in _PROTOS:
            proto = protos[0].strip().lower()
        if len(hosts) == 1:
            parsed = parse_authority(hosts[0].strip())
            if parsed is not None:
                forwarded_host = str(parsed)
    out.append(("X-Forwarded-For", remote))
    out.append(("X-Forwarded-Proto", proto))
    out.append(("X-Forwarded-Host", forwarded_host))
    out.append(("X-Request-ID", request_id))
    out.append(("traceparent", traceparent))
    if tracestate is not None:
        out.append(("tracestate", tracestate))
    if identity:
        out.extend(identity.items())
    return out


#: Upstream response headers never passed on: framing is re-done by the server,
#: the request id is the gateway's own, and backends' software banners stay inside
#: (as Envoy, Kong and nginx do by default).
_DROP_DOWNSTREAM = HOP_BY_HOP | {"content-length", "x-request-id", "server", "x-powered-by"}


class ResponseHead:
    """An upstream response's headers as passed to the client, with the facts the
    proxy needs from them (found in the same pass)."""

    __slots__ = ("content_encoding", "content_type", "declared_length", "headers", "present")

    def __init__(self, headers: list[tuple[str, str]], present: set[str], content_type: str | None,
                 content_encoding: str | None, declared_length: int | None) -> None:
        self.headers = headers
        #: Lower-case names in `headers`.
        self.present = present
        self.content_type = content_type
        self.content_encoding = content_encoding
        self.declared_length = declared_length


def response_head(upstream: Iterable[tuple[str, str]]) -> ResponseHead:
    """Filter an upstream response's headers for the client: hop-by-hop headers,
    headers the upstream's Connection lists, Content-Length and X-Request-ID go."""
    out: list[tuple[str, str]] = []
    present: set[str] = set()
    ctype = cenc = None
    declared: int | None = None
    listed: set[str] | None = None
    for name, value in upstream:
        lower = name.lower()
        if lower in _DROP_DOWNSTREAM:
            if lower == "content-length":
                declared = int(value) if value.isdigit() else None
            elif lower == "connection":
                listed = {t.strip().lower() for t in value.split(",")}
            continue
        if lower == "content-type":
            ctype = value
        elif lower == "content-encoding":
            cenc = value
        out.append((name, value))
        present.add(lower)
    if listed:
        out = [(k, v) for k, v in out if k.lower() not in listed]
        present -= listed
    return ResponseHead(out, present, ctype, cenc, declared)


def downstream_response_headers(upstream: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Response headers passed to the client (framing is re-done by the server)."""
    return response_head(upstream).headers
