"""The chunked transfer coding on the sending side (RFC 9112 §7.1): one chunk
per write, and the last chunk. The gateway never sends chunk extensions or
trailer fields. Used by the server for streamed responses and by the proxy
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
