"""Trailers on HTTP/1.1 (`ResponseWriter.finish_with_trailers`): written in the last
chunk only for a chunked response to a client that sent `TE: trailers`; dropped
otherwise; fields that may not be trailers, or would break framing, never sent."""

from __future__ import annotations

import asyncio

from vocelio_proxy.settings import LimitSettings
from vocelio_proxy.wire.exchange import Exchange
from vocelio_proxy.wire.http1.chunks import last_chunk_with_trailers
from vocelio_proxy.wire.server import HttpConnection, HttpServer

_TRAILERS = [("grpc-status", "0"), ("grpc-message", "ok"), ("Content-Length", "5"), ("x-bad", "a\r\nb: c")]


async def _serve_with_trailers(request: bytes, length: int | None) -> bytes:
    async def handler(ex: Exchange, out: HttpConnection) -> None:
        out.start(ex, 200, [("Content-Type", "text/plain")], length)
        out.write(b"hello")
        out.finish_with_trailers(_TRAILERS)

    server = HttpServer(handler, LimitSettings(), header_timeout_s=2.0, idle_timeout_s=5.0)
    port = await server.listen("127.0.0.1", 0)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        data = await asyncio.wait_for(reader.read(65536), 5)
        writer.close()
        return data
    finally:
        await server.shutdown(1.0)


async def test_a_chunked_response_to_a_client_that_accepts_trailers_ends_with_them() -> None:
    data = await _serve_with_trailers(b"GET / HTTP/1.1\r\nHost: a\r\nTE: trailers\r\nConnection: close\r\n\r\n", None)
    assert data.endswith(b"5\r\nhello\r\n0\r\ngrpc-status: 0\r\ngrpc-message: ok\r\n\r\n")


async def test_trailers_are_dropped_for_a_client_that_did_not_ask_for_them() -> None:
    data = await _serve_with_trailers(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", None)
    assert data.endswith(b"5\r\nhello\r\n0\r\n\r\n")
    assert b"grpc-status" not in data


async def test_trailers_are_dropped_on_a_response_with_a_content_length() -> None:
    data = await _serve_with_trailers(b"GET / HTTP/1.1\r\nHost: a\r\nTE: trailers\r\nConnection: close\r\n\r\n", 5)
    assert data.endswith(b"\r\n\r\nhello")
    assert b"grpc-status" not in data


def test_fields_that_may_not_be_trailers_or_would_split_the_framing_are_never_written() -> None:
    chunk = last_chunk_with_trailers([("grpc-status", "0"), ("content-length", "1"), ("x-a", "1\r\nx-b: 2"),
                                      ("bad name", "v"), (":status", "200")])
    assert chunk == b"0\r\ngrpc-status: 0\r\n\r\n"
