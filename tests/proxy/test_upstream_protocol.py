"""The upstream HTTP/1.1 reader against exact bytes: chunked, close-delimited,
HEAD, interim 1xx, 204, and malformed responses."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.harness.app_fixtures import service
from vocelio_proxy.config import Endpoint, GatewayConfig
from vocelio_proxy.upstream import UpstreamError, UpstreamPool, request_head


def gateway_config(port: int) -> GatewayConfig:
    return GatewayConfig(services=[service("raw", Endpoint(address="127.0.0.1", port=port),
                                           health_check={"enabled": False})])


async def test_chunked_responses_are_decoded_and_reframed(raw_upstream, gateway_factory) -> None:
    port = await raw_upstream(lambda head: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                              b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    gw = await gateway_factory(gateway_config(port))
    status, _, body = await gw.get("/api/v1/raw/x")
    assert (status, body) == (200, b"hello world")


async def test_close_delimited_bodies_end_at_eof(raw_upstream, gateway_factory) -> None:
    port = await raw_upstream(lambda head: b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
    gw = await gateway_factory(gateway_config(port))
    for _ in range(2):  # the closed connection is not reused
        status, _, body = await gw.get("/api/v1/raw/x")
        assert (status, body) == (200, b"until the end")


async def test_head_responses_keep_content_length_without_a_body(raw_upstream, gateway_factory) -> None:
    port = await raw_upstream(lambda head: b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n")
    gw = await gateway_factory(gateway_config(port))
    for _ in range(3):  # and the connection stays usable
        status, headers, body = await gw.request("HEAD", "/api/v1/raw/x")
        assert (status, body, headers["Content-Length"]) == (200, b"", "1234")


async def test_interim_1xx_responses_are_skipped(raw_upstream, gateway_factory) -> None:
    port = await raw_upstream(lambda head: b"HTTP/1.1 100 Continue\r\n\r\n"
                              b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    gw = await gateway_factory(gateway_config(port))
    status, _, body = await gw.request("POST", "/api/v1/raw/x", data=b"abc")
    assert (status, body) == (200, b"ok")


async def test_no_content_responses_have_no_body(raw_upstream, gateway_factory) -> None:
    port = await raw_upstream(lambda head: b"HTTP/1.1 204 No Content\r\n\r\n")
    gw = await gateway_factory(gateway_config(port))
    for _ in range(2):
        status, _, body = await gw.request("DELETE", "/api/v1/raw/x")
        assert (status, body) == (204, b"")


async def test_a_malformed_response_is_a_502_envelope(raw_upstream, gateway_factory) -> None:
    port = await raw_upstream(lambda head: b"NOT HTTP AT ALL\r\n\r\n")
    gw = await gateway_factory(gateway_config(port))
    status, _, body = await gw.request("POST", "/api/v1/raw/x", data=b"1")
    assert status == 502
    assert b"sent an invalid response" in body  # what happened, never the parser's text


async def test_a_reused_connection_times_out_at_its_own_request_deadline(raw_upstream) -> None:
    # The first request answers at once; the second never does. The connection's timer
    # was armed for the first request's long deadline and must not delay the second's.
    answers = iter([b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", None])
    port = await raw_upstream(lambda head: next(answers, None) or b"")
    pool = UpstreamPool()
    try:
        conn = await pool.acquire("127.0.0.1", port, 1.0)
        first = await conn.start_request(request_head("GET", "/a", "t", [], 0), "GET", 60.0)
        assert first.status == 200 and conn.body_complete_buffered() == b"ok"
        pool.release(conn)
        again = await pool.acquire("127.0.0.1", port, 1.0)
        assert again is conn and again.reused
        started = time.monotonic()
        with pytest.raises(UpstreamError) as failure:
            await asyncio.wait_for(again.start_request(request_head("GET", "/b", "t", [], 0), "GET", 0.3), 5)
        assert failure.value.kind == "timeout"
        assert 0.25 <= time.monotonic() - started < 2.0
    finally:
        pool.close()
