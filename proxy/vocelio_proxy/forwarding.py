"""Header policy for forwarded requests and returned responses: hop-by-hop
stripping, X-Forwarded-* through trusted proxies, request ids, W3C trace
context, and removal of client-sent identity headers. Pure; called by the proxy
handler and by the auth layer (client address)."""

from __future__ import annotations

import ipaddress
import random
import re
from collections.abc import Iterable, Mapping

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "proxy-authenticate",
    "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade",
})

#: Headers the gateway itself sets for upstreams; any client-sent copy is dropped.
IDENTITY_PREFIX = "x-vocelio-"
GATEWAY_OWNED = frozenset({"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-real-ip",
                           "forwarded", "traceparent", "x-request-id"})

_DROP_UPSTREAM = HOP_BY_HOP | {"content-length"}
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


# Ids come from the process PRNG, not os.urandom: they label requests and
# traces, they are not secrets, and a getrandom syscall per id costs ~8% of
# the proxy's CPU on the hot path.
_bits = random.getrandbits


def new_request_id() -> str:
    return f"req_{_bits(96):024x}"


def accept_request_id(value: str | None) -> str:
    """Propagate a well-formed client request id; otherwise mint one."""
    if value and _REQUEST_ID.match(value):
        return value
    return new_request_id()


def child_traceparent(value: str | None) -> str:
    """Continue the caller's trace with a new span id, or start a trace."""
    span = f"{_bits(64) or 1:016x}"
    if value:
        match = _TRACEPARENT.match(value.strip().lower())
        if match and match.group(1) != "0" * 32 and match.group(2) != "0" * 16:
            return f"00-{match.group(1)}-{span}-{match.group(3)}"
    return f"00-{_bits(128) or 1:032x}-{span}-01"


def connection_listed(headers: Mapping[str, str]) -> frozenset[str]:
    listed = headers.get("connection", "") or headers.get("Connection", "")
    return frozenset(t.strip().lower() for t in listed.split(",") if t.strip())


def client_address(remote: str, forwarded_for: str | None, trusted_hops: int) -> str:
    """The caller's address: `remote` unless it is one of `trusted_hops` proxies,
    in which case walk X-Forwarded-For from the right, one trusted hop at a time.
    A client cannot move itself into another address's bucket without a trusted
    proxy vouching for the header."""
    if trusted_hops <= 0 or not forwarded_for:
        return remote
    chain = [a.strip() for a in forwarded_for.split(",") if a.strip()]
    hops = [*chain, remote]
    index = max(0, len(hops) - 1 - trusted_hops)
    candidate = hops[index]
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return remote


def upstream_request_headers(
    client_headers: Iterable[tuple[str, str]],
    *,
    remote: str,
    scheme: str,
    host: str,
    trusted_hops: int,
    request_id: str,
    traceparent: str,
    identity: Mapping[str, str] | None = None,
) -> list[tuple[str, str]]:
    """Build the header list sent upstream (without Content-Length/Transfer-Encoding,
    which the forwarder sets from the body it streams)."""
    out: list[tuple[str, str]] = []
    prior_xff: list[str] = []
    prior_proto = None
    listed: frozenset[str] = frozenset()
    for name, value in client_headers:
        lower = name.lower()
        if lower in _DROP_UPSTREAM:
            if lower == "connection":
                listed = listed | {t.strip().lower() for t in value.split(",")}
            continue
        if lower.startswith(IDENTITY_PREFIX):
            continue
        if lower == "x-forwarded-for":
            prior_xff.append(value)
            continue
        if lower == "x-forwarded-proto":
            prior_proto = value
            continue
        if lower in GATEWAY_OWNED:
            continue
        out.append((name, value))
    if listed:
        out = [(k, v) for k, v in out if k.lower() not in listed]
    trusted_chain = ", ".join(prior_xff) if trusted_hops > 0 and prior_xff else ""
    out.append(("X-Forwarded-For", f"{trusted_chain}, {remote}" if trusted_chain else remote))
    proto = prior_proto if (trusted_hops > 0 and prior_proto in ("http", "https")) else scheme
    out.append(("X-Forwarded-Proto", proto or scheme))
    out.append(("X-Forwarded-Host", host))
    out.append(("X-Request-ID", request_id))
    out.append(("traceparent", traceparent))
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
