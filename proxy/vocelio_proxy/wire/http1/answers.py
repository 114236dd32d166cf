"""The head of an upstream answer, read by one set of rules for both upstream
sides: the pooled client (`upstream.UpstreamConnection`) and the connection
that carries an upgrade request (`tunnel.UpgradeUpstream`).

`UpstreamHeadReader` is owned by an llhttp (httptools) response-parser
protocol, which hands it each `on_header` callback: it keeps the fields of the
answer head within `UPSTREAM_MAX_HEADER_BYTES` / `UPSTREAM_MAX_HEADERS`
(refusing with `WireError(502)` beyond), drops trailer fields (they never
become response headers), and trims trailing whitespace from values (RFC 9110
§5.5); `head_read` bounds the raw bytes of a head that does not end
(`UPSTREAM_MAX_HEAD_READ`). How the body is delimited and whether the
connection may be reused is `framing.upstream_body_framing`. Obsolete line
folding, bare CR/LF and other syntax errors are refused by llhttp itself.

A part the shells hold, not a base class they extend: the module is compiled
with mypyc (docs/performance.md), and a compiled class cannot be subclassed
by the modules that stay Python (`tunnel`, tests).

Sans-I/O: no sockets, no clock; the I/O shells feed it parser callbacks and
read sizes, and turn `WireError` into their own upstream errors (a 502)."""

from __future__ import annotations

from vocelio_proxy.wire.http1.framing import WireError
from vocelio_proxy.wire.http1.limits import UPSTREAM_MAX_HEAD_READ, UPSTREAM_MAX_HEADER_BYTES, UPSTREAM_MAX_HEADERS

_OWS = (32, 9)


class UpstreamHeadReader:
    """The fields of one upstream answer head. Its owner passes llhttp's `on_header`
    callbacks to `on_header`, calls `start_head` before each answer and again after an
    interim 1xx head, sets `in_body` when a head completes, and calls `head_read(size)`
    after feeding a read that left the head incomplete."""

    __slots__ = ("_field_bytes", "_head_read", "fields", "in_body")

    def __init__(self) -> None:
        #: The fields of the head being read, names as sent (a new list per head: the
        #: list handed on with an answer is never changed afterwards).
        self.fields: list[tuple[str, str]] = []
        #: The head is complete: further fields are trailers.
        self.in_body = False
        self._field_bytes = 0
        self._head_read = 0

    def start_head(self, *, interim: bool = False) -> None:
        """Forget the fields (a new answer, or the final head after an interim one;
        the raw byte count runs on across interim heads of one answer)."""
        self.fields = []
        self._field_bytes = 0
        self.in_body = False
        if not interim:
            self._head_read = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.in_body:
            # A trailer field: never added to the response headers the client gets.
            return
        self._field_bytes += len(name) + len(value)
        if self._field_bytes > UPSTREAM_MAX_HEADER_BYTES or len(self.fields) >= UPSTREAM_MAX_HEADERS:
            raise WireError(502, "upstream response headers too large")
        if value and value[-1] in _OWS:
            value = value.rstrip(b" \t")
        self.fields.append((name.decode("latin-1"), value.decode("latin-1")))

    def head_read(self, size: int) -> None:
        """`size` bytes were fed and the head is still incomplete: refuse a head
        that has taken more than `UPSTREAM_MAX_HEAD_READ` bytes (llhttp hands a
        field to `on_header` only once it ends, buffering it until then)."""
        self._head_read += size
        if self._head_read > UPSTREAM_MAX_HEAD_READ:
            raise WireError(502, "upstream response head too large")
