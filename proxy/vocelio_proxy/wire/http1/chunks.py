"""The chunked transfer coding on the sending side (RFC 9112 §7.1): one chunk
per write, and the last chunk (with trailer fields when the pipeline ends a
response with trailers and the client accepts them). The gateway never sends
chunk extensions. Used by the server for streamed responses and by the proxy
for chunked uploads to an upstream; decoding is llhttp's, under `reader`."""

from __future__ import annotations

#: The last chunk with an empty trailer section: ends a chunked body.
LAST_CHUNK = b"0\r\n\r\n"


def encode_chunk(data: bytes) -> bytes:
    """`data` as one chunk. An empty write is no chunk at all: a zero-size chunk
    would end the body early (it is the last chunk)."""
    if not data:
        return b""
    return b"%x\r\n%s\r\n" % (len(data), data)


#: Trailer fields that must never follow a body (RFC 9110 §6.5.1: framing, routing,
#: request modifiers, authentication, response control); dropped when seen.
_NOT_TRAILERS = frozenset({
    "content-length", "transfer-encoding", "content-encoding", "content-type", "content-range", "trailer",
    "host", "connection", "keep-alive", "upgrade", "proxy-connection", "te", "set-cookie", "authorization",
    "www-authenticate", "proxy-authenticate", "proxy-authorization", "cache-control", "expires", "date",
    "location", "retry-after", "vary", "age", "max-forwards", "expect", "range", "if-match",
})


def _field_ok(name: str, value: str) -> bool:
    if not name or name.lower() in _NOT_TRAILERS or name.startswith(":"):
        return False
    return not any(c in name for c in " \t\r\n:\0") and not any(c in value for c in "\r\n\0")


def last_chunk_with_trailers(trailers: list[tuple[str, str]]) -> bytes:
    """The last chunk carrying `trailers` (RFC 9112 §7.1.2). Fields that may not be
    trailers and fields that would break the framing (CR, LF, NUL, a bad name) are
    dropped: a trailer never changes how the message is framed or routed."""
    lines = b"".join(f"{name}: {value}\r\n".encode("latin-1", "replace")
                     for name, value in trailers if _field_ok(name, value))
    return b"0\r\n" + lines + b"\r\n"
