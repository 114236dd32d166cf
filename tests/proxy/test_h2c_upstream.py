"""The h2c upstream pool against a real grpcio server on 127.0.0.1: streams
multiplexed on a bounded number of connections, trailers delivered, a reset
reaching the backend as a cancel, a dead connection failing only its own
streams."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterator

import pytest

from tests.harness.app_fixtures import poll
from tests.harness.grpc_backend import BackendProcess, GrpcBackend
from vocelio_proxy.wire.h2c_upstream import H2cLimits, H2cPool, H2cStream, request_headers
from vocelio_proxy.wire.upstream import UpstreamError


def frame(message: bytes) -> bytes:
    return b"\x00" + struct.pack(">I", len(message)) + message


def messages(data: bytes) -> list[bytes]:
    out = []
    while data:
        size = struct.unpack(">I", data[1:5])[0]
        out.append(data[5:5 + size])
        data = data[5 + size:]
    return out


def grpc_block(port: int, method: str, extra: list[tuple[str, str]] | None = None) -> list[tuple[bytes, bytes]]:
    headers = [("content-type", "application/grpc"), ("te", "trailers"), ("Connection", "keep-alive"),
               ("keep-alive", "timeout=5"), ("user-agent", "test")] + (extra or [])
    return request_headers("POST", "http", f"127.0.0.1:{port}", f"/test.Echo/{method}", headers)


@pytest.fixture
def backend() -> Iterator[GrpcBackend]:
    server = GrpcBackend().start()
    yield server
    server.stop()


async def call(pool: H2cPool, port: int, method: str, body: bytes,
               ) -> tuple[int, list[tuple[str, str]], bytes, list[tuple[str, str]] | None]:
    stream = await pool.open_stream("127.0.0.1", port, grpc_block(port, method), False, 2.0)
    try:
        await stream.send_data(body, end_stream=True)
        async with asyncio.timeout(5):
            status, headers = await stream.response()
            data = b"".join([chunk async for chunk in stream.iter_body()])
        return status, headers, data, stream.trailers
    finally:
        stream.release()


async def drain(stream: H2cStream) -> None:
    async with asyncio.timeout(5):
        async for _ in stream.iter_body():
            pass


def test_hop_by_hop_fields_are_dropped_and_te_trailers_is_kept() -> None:
    block = request_headers("POST", "http", "a:1", "/x", [
        ("Connection", "keep-alive, x-private"), ("X-Private", "1"), ("Keep-Alive", "5"), ("TE", "trailers, gzip"),
        ("Transfer-Encoding", "chunked"), ("Upgrade", "h2c"), ("Host", "a"), ("X-Kept", "v")])
    names = [k for k, _ in block]
    assert names == [b":method", b":scheme", b":authority", b":path", b"x-kept", b"te"]
    assert (b"te", b"trailers") in block


async def test_a_unary_call_returns_its_message_headers_and_trailers(backend: GrpcBackend) -> None:
    pool = H2cPool()
    try:
        status, headers, data, trailers = await call(pool, backend.port, "Unary", frame(b"hello"))
        assert status == 200
        assert ("x-initial", "yes") in headers
        assert messages(data) == [b"hello"]
        assert trailers is not None
        assert ("grpc-status", "0") in trailers
        assert ("x-trailer", "done") in trailers
        status, _, data, trailers = await call(pool, backend.port, "Unary", frame(b"fail:bad input"))
        assert dict(trailers or [])["grpc-status"] == "3"
        assert dict(trailers or [])["grpc-message"] == "bad input"
    finally:
        pool.close()


async def test_many_concurrent_streams_share_a_bounded_number_of_connections(backend: GrpcBackend) -> None:
    pool = H2cPool(H2cLimits(connections_per_endpoint=2, streams_per_connection=8))
    try:
        results = await asyncio.gather(*[call(pool, backend.port, "Unary", frame(b"sleep:0.05"))
                                         for _ in range(40)])
        assert all(messages(data) == [b"sleep:0.05"] for _, _, data, _ in results)
        assert pool.created <= 2
        assert pool.stream_count() == 0
    finally:
        pool.close()


async def test_a_request_finding_no_free_stream_waits_then_fails_within_its_budget(backend: GrpcBackend) -> None:
    pool = H2cPool(H2cLimits(connections_per_endpoint=1, streams_per_connection=1))
    try:
        held = await pool.open_stream("127.0.0.1", backend.port, grpc_block(backend.port, "ServerStream"), False, 2)
        with pytest.raises(UpstreamError) as caught:
            await pool.open_stream("127.0.0.1", backend.port, grpc_block(backend.port, "Unary"), False, 0.2)
        assert caught.value.kind == "connect"
        waiting = asyncio.ensure_future(pool.open_stream("127.0.0.1", backend.port,
                                                         grpc_block(backend.port, "Unary"), False, 2))
        await asyncio.sleep(0)
        held.reset()
        second = await waiting
        second.reset()
        assert pool.created == 1
    finally:
        pool.close()


async def test_a_reset_stream_reaches_the_backend_as_a_cancel_and_frees_its_slot(backend: GrpcBackend) -> None:
    pool = H2cPool()
    try:
        stream = await pool.open_stream("127.0.0.1", backend.port, grpc_block(backend.port, "ServerStream"), False, 2)
        await stream.send_data(frame(b"forever"), end_stream=True)
        async with asyncio.timeout(5):
            status, _ = await stream.response()
            chunks = stream.iter_body()
            first = await anext(chunks)
        assert status == 200
        assert first
        stream.reset()
        assert pool.stream_count() == 0
        await poll(lambda: backend.stream_cancelled.is_set(), "the backend saw the cancel")
    finally:
        pool.close()


async def test_a_backend_killed_mid_stream_fails_its_streams_and_leaves_no_connection() -> None:
    backend = await asyncio.to_thread(BackendProcess)
    pool = H2cPool()
    try:
        stream = await pool.open_stream("127.0.0.1", backend.port, grpc_block(backend.port, "ServerStream"), False, 2)
        await stream.send_data(frame(b"forever"), end_stream=True)
        async with asyncio.timeout(5):
            await stream.response()
        port = backend.port
        await asyncio.to_thread(backend.kill)
        with pytest.raises(UpstreamError) as caught:
            await drain(stream)
        assert caught.value.kind == "reset", caught.value
        stream.release()
        assert pool.connection_count() == 0
        with pytest.raises(UpstreamError) as refused:
            await pool.open_stream("127.0.0.1", port, grpc_block(port, "Unary"), False, 1)
        assert refused.value.kind == "connect"
    finally:
        pool.close()
        backend.kill()


async def test_a_graceful_goaway_lets_the_streams_in_flight_finish_and_takes_no_new_one(
        backend: GrpcBackend) -> None:
    pool = H2cPool()
    try:
        stream = await pool.open_stream("127.0.0.1", backend.port, grpc_block(backend.port, "ServerStream"), False, 2)
        await stream.send_data(frame(b"n:10:0.05"), end_stream=True)
        async with asyncio.timeout(5):
            await stream.response()
        backend.server.stop(grace=5)  # GOAWAY now; calls in flight may finish
        await poll(lambda: stream.connection.going_away, "the upstream said it is going away")
        assert not stream.connection.closed
        data = b""
        async with asyncio.timeout(5):
            async for chunk in stream.iter_body():
                data += chunk
        assert messages(data) == [b"msg-%d" % i for i in range(10)]
        assert dict(stream.trailers or [])["grpc-status"] == "0"
        stream.release()
        await poll(lambda: pool.connection_count() == 0, "the drained connection is closed")
    finally:
        pool.close()
