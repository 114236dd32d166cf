"""The request side of a client connection without sockets: bytes in,
requests out. llhttp (through httptools) tokenises, for speed; every decision
on top of it is made here, in the parser's own callbacks, with the rules of
`framing`:

- limits on the target, the header bytes and the number of fields (414, 431);
- the request-target forms, fragments, Host (missing, repeated, invalid),
  the HTTP version (505), Transfer-Encoding and Content-Length (400/501);
- header values lose trailing whitespace (llhttp keeps it; RFC 9110 §5.5);
- chunked trailer fields are never headers: they are counted against the
  header budget (431 when over) and dropped;
- a chunked body longer than `max_body_bytes` is refused (413) as it arrives;
- parsing stops within one slice when the consumer pauses the reader
  (`paused`), so a read full of pipelined requests is not all parsed at once.

Results go to a `RequestEvents` sink, in order: `head_started`,
`head_received(exchange, has_body, expect_continue)`, `body_data`*,
`message_complete`. A refusal is raised from `feed` as `WireError`. The
server (`server.HttpConnection`) is the production sink; the unit and
differential tests use a sink that records events.
"""

from __future__ import annotations

from typing import Protocol

import httptools

from vocelio_proxy.wire.exchange import Exchange
from vocelio_proxy.wire.http1.framing import (
    WireError,
    expects_continue,
    index_headers,
    request_body_framing,
    request_keep_alive,
    request_target,
    valid_authority,
)
from vocelio_proxy.wire.http1.limits import PARSE_SLICE, WireLimits

_OWS = (32, 9)


class RequestEvents(Protocol):
    """What a `RequestReader` reports for each request on a connection."""

    def head_started(self) -> None:
        """The first byte of a request head arrived."""

    def head_received(self, ex: Exchange, has_body: bool, expect_continue: bool) -> None:
        """A whole, valid head. `ex.body` is None; the sink attaches a body source when `has_body`."""

    def body_data(self, data: bytes) -> None:
        """Decoded body bytes of the current request (chunk framing removed)."""

    def message_complete(self) -> None:
        """The current request (head and body) ended."""


class RequestReader:
    """Turns the bytes of one client connection into `RequestEvents`.

    `feed(data)` returns how many bytes it consumed: all of them, unless the
    sink set `paused` (the rest is for a later `feed`) or the request switched
    protocols (`upgraded`: the rest belongs to the tunnel)."""

    def __init__(self, events: RequestEvents, limits: WireLimits, peer: str = "0.0.0.0") -> None:
        self._events = events
        # Bound once: called for every request.
        self._head_started = events.head_started
        self._head_received = events.head_received
        self._body_data = events.body_data
        self._message_complete = events.message_complete
        self._limits = limits
        self.peer = peer
        self._parser = httptools.HttpRequestParser(self)
        self._url: list[bytes] = []
        self._url_bytes = 0
        self._headers: list[tuple[str, str]] = []
        self._header_bytes = 0
        self._in_body = False
        self._trailer_bytes = 0
        self._trailers = 0
        # Bytes still due for a Content-Length body (fed to llhttp in one piece).
        self._body_left = 0
        self._chunked = False
        self._chunked_bytes = 0
        self._reject: WireError | None = None
        # The last Host value found valid: keep-alive clients repeat theirs, and an
        # equality test is cheaper than the grammar.
        self._valid_host = ""
        #: Target plus header bytes of the last head (what a queued request costs).
        self.head_bytes = 0
        #: Set by the sink to stop parsing at the next slice boundary.
        self.paused = False
        #: Bytes handed to llhttp at a time (the sink lowers it while it queues requests).
        self.slice = PARSE_SLICE
        #: The request switched protocols; bytes after its head are the tunnel's.
        self.upgraded = False
        #: A refusal ended parsing on this connection.
        self.failed = False

    @property
    def in_body(self) -> bool:
        """A request head was read and its body (or trailers) is still arriving."""
        return self._in_body

    # -- bytes in ----------------------------------------------------------------
    def feed(self, data: bytes | memoryview) -> int:
        """Parse `data`; raises `WireError` for a request the gateway refuses."""
        n = len(data)
        if n <= self.slice and not self.failed and not self.upgraded:
            # The common case (one request per read), without the slicing loop.
            try:
                self._parser.feed_data(data)
            except httptools.HttpParserUpgrade as upgrade:
                self.upgraded = True
                return int(upgrade.args[0])
            except httptools.HttpParserError as exc:
                self.failed = True
                raise self._refusal(exc) from None
            return n
        if self.failed:
            return n  # dropped: the connection is being closed
        if self.upgraded:
            return 0
        view = memoryview(data)
        pos = 0
        while pos < n:
            # A Content-Length body's remaining bytes go in one piece; anything
            # else in slices, so that a pause takes effect within one slice.
            step = self.slice
            end = pos + (self._body_left if self._body_left > step else step)
            if end > n:
                end = n
            used = self._feed(view[pos:end], pos, end)
            if used < end or self.paused:
                return used
            pos = end
        return n

    def _feed(self, data: bytes | memoryview, base: int, end: int) -> int:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self.upgraded = True
            return base + int(upgrade.args[0])
        except httptools.HttpParserError as exc:
            self.failed = True
            raise self._refusal(exc) from None
        return end

    def _refusal(self, exc: Exception) -> WireError:
        if self._reject is not None:
            return self._reject
        cause = exc.__context__
        if isinstance(cause, WireError):
            return cause
        if isinstance(exc, httptools.HttpParserCallbackError) and cause is not None:
            # The sink failed, not the client: surface the bug.
            raise cause
        return WireError(400, f"Malformed HTTP request: {exc}")

    def _refuse(self, status: int, message: str) -> WireError:
        self._reject = WireError(status, message)
        return self._reject

    # -- llhttp callbacks ------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._url = []
        self._url_bytes = 0
        self._headers = []
        self._header_bytes = 0
        self._in_body = False
        self._head_started()

    def on_url(self, url: bytes) -> None:
        self._url.append(url)
        self._url_bytes += len(url)
        if self._url_bytes > self._limits.max_url_bytes:
            raise self._refuse(414, f"The URL exceeds {self._limits.max_url_bytes} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        limits = self._limits
        if self._in_body:
            # A trailer field (RFC 9112 §7.1.2): never merged into the headers the
            # pipeline checked and forwards; counted, so it cannot exhaust memory.
            self._trailer_bytes += len(name) + len(value)
            self._trailers += 1
            if self._trailer_bytes > limits.max_header_bytes or self._trailers > limits.max_headers:
                raise self._refuse(431, f"Request trailers exceed {limits.max_header_bytes} bytes "
                                        f"or {limits.max_headers} fields")
            return
        self._header_bytes += len(name) + len(value)
        if self._header_bytes > limits.max_header_bytes:
            raise self._refuse(431, f"Request headers exceed {limits.max_header_bytes} bytes")
        if len(self._headers) >= limits.max_headers:
            raise self._refuse(431, f"More than {limits.max_headers} request headers")
        if value and value[-1] in _OWS:
            value = value.rstrip(b" \t")
        self._headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        parser = self._parser
        version = parser.get_http_version()
        if version != "1.1" and version != "1.0":
            raise self._refuse(505, f"HTTP/{version} is not supported; use HTTP/1.1")
        headers = self._headers
        try:
            lookup = index_headers(headers)
            url = self._url[0] if len(self._url) == 1 else b"".join(self._url)
            method = parser.get_method().decode("ascii")
            target, authority = request_target(method, url.decode("latin-1"))
            host = lookup.get("host")
            if host is None:
                if version == "1.1":
                    raise WireError(400, "An HTTP/1.1 request must have a Host header")
            elif host != self._valid_host:
                if not valid_authority(host):
                    raise WireError(400, "Invalid Host header")
                self._valid_host = host
            if authority is not None and method != "CONNECT":
                # RFC 9112 §3.2.2: the target's authority replaces Host.
                lookup["host"] = authority
            length, chunked = request_body_framing(version, lookup)
        except WireError as exc:
            self._reject = exc
            raise
        upgrade = parser.should_upgrade()
        has_body = chunked or bool(length)
        if upgrade and has_body:
            # The bytes after an upgrade head are the tunnel's; a body would be read as both.
            raise self._refuse(400, "An upgrade request cannot carry a body")
        ex = Exchange(method, target, version, headers, lookup, self.peer,
                      request_keep_alive(version, lookup.get("connection")), None,
                      None if chunked else length, upgrade)
        self.head_bytes = self._url_bytes + self._header_bytes
        # The head as written with canonical spacing: "METHOD target HTTP/1.1\r\n", then
        # "name: value\r\n" per header and the blank line (the metrics and access log).
        ex.head_bytes = len(method) + self._url_bytes + 12 + self._header_bytes + 4 * len(headers) + 2
        self._in_body = True
        self._trailer_bytes = 0
        self._trailers = 0
        self._chunked = chunked
        self._chunked_bytes = 0
        self._body_left = length if length and not chunked else 0
        self._head_received(ex, has_body, has_body and expects_continue(version, lookup.get("expect")))

    def on_body(self, body: bytes) -> None:
        if self._chunked:
            self._chunked_bytes += len(body)
            if self._chunked_bytes > self._limits.max_body_bytes:
                raise self._refuse(413, f"Request body exceeds {self._limits.max_body_bytes} bytes")
        else:
            self._body_left -= len(body)
        self._body_data(body)

    def on_message_complete(self) -> None:
        self._in_body = False
        self._body_left = 0
        self._message_complete()
