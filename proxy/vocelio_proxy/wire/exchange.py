"""One client request as the gateway's pipeline sees it, independent of the
server that parsed it: method, target, headers (as sent, and by lower-case
name), the peer, the body source, and the facts the pipeline records on the
way (request id, client address, service, upstream, attempts, status).
Created by `http1.reader.RequestReader` (for `server.HttpConnection`) once a
head passed the wire rules; read and annotated by `handling`, `edge` and
`proxying`. Beside it, `ResponseWriter`: what the pipeline writes its answer
through (implemented by `server.HttpConnection`; tests pass their own), so the
pipeline never depends on the concrete server. No I/O here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from vocelio_proxy.policy.auth.identity import Identity


class BodyError(Exception):
    """The client's request body cannot be completed (malformed framing, a stalled
    or incomplete body): raised by `BodySource.chunks`. The pipeline answers
    `status` (400 or 408) with the envelope when no response has started, closes
    the connection, and releases what the request held (upstream connection,
    in-flight counts, breaker slot). Never an upstream failure."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class BodySource(Protocol):
    """The request body as it arrives (the server applies back-pressure)."""

    @property
    def complete(self) -> bool:
        """True once the whole body has arrived from the client."""
        ...

    def chunks(self) -> AsyncIterator[bytes]: ...


class Exchange:
    __slots__ = (
        "attempts", "body", "caller", "client_ip", "content_length", "cors_headers", "extra_headers", "head_bytes",
        "headers", "hsts", "keep_alive", "lookup", "method", "peer", "request_id", "sent_bytes", "service_label",
        "span_parent", "status", "target", "traceparent", "tracestate", "upgrade", "upstream", "version",
    )

    def __init__(self, method: str, target: str, version: str, headers: list[tuple[str, str]],
                 lookup: dict[str, str], peer: str, keep_alive: bool, body: BodySource | None,
                 content_length: int | None, upgrade: bool) -> None:
        self.method = method
        #: The request target as sent: path and query, still percent-encoded.
        self.target = target
        self.version = version
        #: Headers in arrival order, names as sent.
        self.headers = headers
        #: Headers by lower-case name; repeated headers joined with ", ".
        self.lookup = lookup
        self.peer = peer
        self.keep_alive = keep_alive
        #: None when the request has no body.
        self.body = body
        #: Declared Content-Length; None for chunked bodies (and for no body).
        self.content_length = content_length
        self.upgrade = upgrade
        self.request_id = ""
        self.client_ip = peer
        self.service_label = "gateway"
        self.upstream: str | None = None
        self.attempts = 0
        #: The status sent to the client (0 until the response head is written).
        self.status = 0
        #: Headers the edge policy adds to the response (rate-limit fields).
        self.extra_headers: dict[str, str] | None = None
        self.cors_headers: dict[str, str] | None = None
        #: Bytes of the request line and headers as received (set by the reader).
        self.head_bytes = 0
        #: Bytes written to the client for this answer: status line, headers, body (the server).
        self.sent_bytes = 0
        #: The trace context sent upstream (`tracecontext.propagate`); None until proxied.
        self.traceparent: str | None = None
        self.tracestate: str | None = None
        #: With span export: the parent id of the gateway's span ("" for a root), None for no span.
        self.span_parent: str | None = None
        #: The authenticated caller (set by the edge policy; None when anonymous).
        self.caller: Identity | None = None
        #: Strict-Transport-Security for the answer: set by the pipeline when the client used https.
        self.hsts: str | None = None

    @property
    def host(self) -> str:
        return self.lookup.get("host", "")

    @property
    def path(self) -> str:
        """The target without its query string (still percent-encoded)."""
        return self.target.partition("?")[0]


class TunnelClient(Protocol):
    """The client's side of an upgrade tunnel, as the upstream side (`tunnel`) relays
    into it: raw bytes out, back-pressure, and the end."""

    def tunnel_write(self, data: bytes) -> None: ...

    def tunnel_pause(self) -> None: ...

    def tunnel_resume(self) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


class ResponseWriter(TunnelClient, Protocol):
    """Where the pipeline writes the answer to one `Exchange`: a whole response
    (`send`), a streamed one (`start`, `write`, `drain`, `finish` or
    `finish_with_trailers`), or the end of the
    connection (`close` after the answer, `abort` at once). A writer that can also
    become a tunnel after a 101 is a `tunnel.UpgradableWriter`."""

    @property
    def date(self) -> str:
        """The current `Date` header value (cached by the server once per second)."""
        ...

    def send(self, ex: Exchange, status: int, headers: list[tuple[str, str]], body: bytes,
             length: int | None = None) -> None: ...

    def start(self, ex: Exchange, status: int, headers: list[tuple[str, str]], length: int | None) -> None: ...

    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...

    def finish(self) -> None: ...

    def finish_with_trailers(self, trailers: list[tuple[str, str]]) -> None:
        """End a streamed response with trailer fields (gRPC's `grpc-status`):
        HTTP/2 sends them as a last HEADERS frame; HTTP/1.1 writes them in the last
        chunk when the response is chunked and the client sent `TE: trailers`, and
        otherwise drops them and ends the response like `finish`."""
        ...
