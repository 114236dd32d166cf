"""The sizes and budgets the wire rules enforce, in one frozen value built
once from settings (`server.HttpServer` builds it from `LimitSettings`), plus
the fixed limits of the upstream side. Pure data; read by `reader`, `body`
and the I/O shells."""

from __future__ import annotations

from dataclasses import dataclass

#: A body buffer asks its producer to pause above this many bytes, and to
#: resume below the low watermark (request bodies in the server, response
#: bodies in the upstream client).
BODY_HIGH_WATER = 256 * 1024
BODY_LOW_WATER = 64 * 1024

#: The request reader hands llhttp at most this many bytes at a time when a
#: read holds more, so that a connection whose budget is spent stops parsing
#: within one slice (a 64 KiB read can hold thousands of pipelined requests).
#: Bodies with a known remaining length go in one piece.
PARSE_SLICE = 2048
#: The slice while requests are queued on a connection (it is pipelining): the
#: queue overshoots its cap by at most what fits in this many bytes.
PIPELINED_SLICE = 256

#: What one queued (parsed, not yet answered) request costs beyond its head
#: bytes: the Exchange, its header list and dict (measured: 0.5-1 KiB).
QUEUED_REQUEST_OVERHEAD = 768

#: Upstream response heads: an upstream is not trusted with unbounded memory either.
UPSTREAM_MAX_HEADER_BYTES = 64 * 1024
UPSTREAM_MAX_HEADERS = 256
#: Raw bytes an upstream answer head may take on the wire (status line, names,
#: values, separators and line ends of the fields above, interim 1xx heads of the
#: same answer included). Checked per read, before llhttp's callbacks see a field,
#: so a head that never ends cannot grow memory past this plus one read.
UPSTREAM_MAX_HEAD_READ = UPSTREAM_MAX_HEADER_BYTES + 8 * UPSTREAM_MAX_HEADERS + 1024
#: The largest body of an upstream's refusal of an upgrade (any final answer but
#: 101) that is relayed; a larger one is a 502, never a shortened copy.
UPGRADE_REFUSAL_MAX_BODY = 64 * 1024


@dataclass(frozen=True, slots=True)
class WireLimits:
    """Per-connection limits of the client-facing server."""

    #: Request target (414 above).
    max_url_bytes: int = 8192
    #: Names plus values of all header fields (431 above); trailers have the same budget.
    max_header_bytes: int = 16384
    #: Header field lines (431 above).
    max_headers: int = 100
    #: A chunked body longer than this is refused with 413 while it arrives
    #: (a declared Content-Length above it is refused by the pipeline before reading).
    max_body_bytes: int = 10 * 1024 * 1024
    #: Parsed-but-unanswered requests on one connection before reading pauses.
    max_pipelined: int = 16
    #: Bytes one connection may hold for answers not yet taken by the client
    #: (unsent response bytes + queued requests); reading pauses above it.
    connection_budget_bytes: int = 256 * 1024
    body_high_water: int = BODY_HIGH_WATER
    body_low_water: int = BODY_LOW_WATER

    def __post_init__(self) -> None:
        if self.body_low_water > self.body_high_water:
            raise ValueError("body_low_water must not exceed body_high_water")
