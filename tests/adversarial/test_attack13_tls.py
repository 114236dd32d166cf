"""Red team, issue 13, the TLS listener: hostile server names in the ClientHello,
and requests for another host than the one the connection's SNI named.

- CPython decodes the SNI host name before the gateway's SNI callback runs; a name
  with bytes outside ASCII (RFC 6066 §3: HostName is ASCII) makes it print a
  traceback on stderr ("Exception ignored in ...") for every such handshake, outside
  the gateway's logs: an unauthenticated client could flood the pod's log with them.
  The handshake still fails (counted as `protocol`), and nothing is printed.
- SNI vs Host (domain fronting): no TLS setting is per host (one policy, no client
  certificates), so the SNI grants nothing a client could not get by naming the other
  host in its ClientHello; a request is routed by its own Host/:authority, whatever
  the SNI (HTTP/2 connection coalescing, RFC 9113 §9.1.1, relies on it)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web

from tests.harness.app_fixtures import poll
from tests.harness.h2_tools import H2Client
from tests.harness.hostile import raw_request, status_of
from tests.harness.tls_fixtures import TlsGatewayFactory, ca, event_loop_policy, tls_gateway
from tests.harness.tls_tools import TestCa, TlsClient

__all__ = ["ca", "event_loop_policy", "tls_gateway"]  # fixtures

_PLACEHOLDER = b"zzzz"


def _client_hello(server_name: bytes) -> bytes:
    """A real ClientHello (Python's client) whose SNI host name is `server_name`
    (spliced in place of a placeholder of the same length: nothing else changes)."""
    assert len(server_name) == len(_PLACEHOLDER)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = ctx.wrap_bio(incoming, outgoing, server_hostname=f"{_PLACEHOLDER.decode()}.a.example.com")
    with contextlib.suppress(ssl.SSLWantReadError):
        client.do_handshake()
    hello = outgoing.read()
    assert hello.count(_PLACEHOLDER) == 1
    return hello.replace(_PLACEHOLDER, server_name)


async def _send_and_wait_closed(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    received = b""
    try:
        while chunk := await asyncio.wait_for(reader.read(4096), 5):
            received += chunk
    except ConnectionResetError:
        pass
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return received


@contextlib.contextmanager
def _unraisable() -> Iterator[list[Any]]:
    """What reaches `sys.unraisablehook` (CPython's "Exception ignored in" printer)."""
    seen: list[Any] = []
    previous = sys.unraisablehook
    sys.unraisablehook = seen.append
    try:
        yield seen
    finally:
        sys.unraisablehook = previous


@pytest.mark.parametrize("name", [b"\xff\xfe\xfd\xfc", b"\xc3\xa9t\xc3"], ids=["latin-bytes", "cut-utf8"])
async def test_a_server_name_that_is_not_ascii_fails_its_handshake_without_a_traceback(
        tls_gateway: TlsGatewayFactory, ca: TestCa, name: bytes) -> None:
    with _unraisable() as seen:
        gw = await tls_gateway({"a": ca.issue("a.example.com", "*.a.example.com")})
        server = gw.running.tls.server if gw.running.tls else None
        assert server is not None
        for _ in range(3):
            await _send_and_wait_closed(gw.tls_port, _client_hello(name))
        await poll(lambda: server.handshake_failures.get("protocol") == 3, "the failed handshakes counted")
    assert [type(u.exc_value).__name__ for u in seen] == [], "CPython printed a traceback for a client's SNI"
    # The listener still serves a well-formed name.
    client = await TlsClient.connect(gw.tls_port, gw.ca_file, servername="a.example.com")
    try:
        status, _, _ = await client.request("/health")
    finally:
        await client.close()
    assert status == 200


async def test_an_unraisable_error_that_is_not_a_server_name_still_reaches_the_hook(
        tls_gateway: TlsGatewayFactory, ca: TestCa) -> None:
    """The guard drops only the SNI decoding failure: every other unraisable error is reported."""
    with _unraisable() as seen:
        await tls_gateway({"a": ca.issue("a.example.com")})

        class Noisy:
            def __del__(self) -> None:
                raise RuntimeError("a finaliser failed")

        Noisy()
    assert [type(u.exc_value).__name__ for u in seen] == ["RuntimeError"]


async def test_a_request_for_another_host_over_a_connection_for_one_sni_is_routed_by_its_host(
        tls_gateway: TlsGatewayFactory, ca: TestCa) -> None:
    """The documented decision on domain fronting: allowed, routed by Host (see the module doc)."""
    async def host_echo(request: web.Request) -> web.Response:
        return web.Response(text=request.headers.get("Host", ""))

    gw = await tls_gateway({"a": ca.issue("a.example.com"), "b": ca.issue("b.example.com")}, handler=host_echo)
    client = await TlsClient.connect(gw.tls_port, gw.ca_file, servername="a.example.com")
    try:
        status, _, body = await client.request("/api/echo/x", host="b.example.com")
    finally:
        await client.close()
    assert status == 200
    assert body == b"b.example.com"


@pytest.mark.parametrize("target", ["/public/../api/echo/x", "/public/%2e%2e/api/echo/x", "/public/./../api/echo/x",
                                    "/public//..//api/echo/x"])
async def test_a_path_exempt_from_the_https_redirect_only_by_its_spelling_is_redirected(
        tls_gateway: TlsGatewayFactory, ca: TestCa, target: str) -> None:
    """With a prefix exemption (`/public/`), a dot-segment spelling of another path must not
    be served over plain HTTP: the exemption is decided on the path the router serves."""
    gw = await tls_gateway({"a": ca.issue("a.example.com")},
                           tls={"redirect": {"enabled": True, "exempt_paths": ["/health", "/public/"]}})
    answer = await raw_request(gw.port, f"GET {target} HTTP/1.1\r\nHost: a.example.com\r\n"
                                        "Connection: close\r\n\r\n".encode())
    assert status_of(answer) in (308, 400), answer[:200]
    assert gw.upstream.hits == []
    probe = await raw_request(gw.port, b"GET /health HTTP/1.1\r\nHost: a.example.com\r\nConnection: close\r\n\r\n")
    assert status_of(probe) == 200
    # The prefix exemption itself still holds for a path under it.
    public = await raw_request(gw.port, b"GET /public/x HTTP/1.1\r\nHost: a.example.com\r\nConnection: close\r\n\r\n")
    assert status_of(public) != 308


async def test_http2_over_tls_gets_the_same_https_treatment_as_http1(
        tls_gateway: TlsGatewayFactory, ca: TestCa) -> None:
    """ALPN h2: the upstream is told https, the answer carries HSTS, and a client's own
    X-Forwarded-Proto (untrusted) is not what the upstream reads."""
    async def proto_echo(request: web.Request) -> web.Response:
        return web.Response(text=",".join(request.headers.getall("X-Forwarded-Proto", [])))

    gw = await tls_gateway({"a": ca.issue("a.example.com")}, handler=proto_echo)
    ctx = ssl.create_default_context(cafile=str(gw.ca_file))
    ctx.set_alpn_protocols(["h2"])
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.tls_port, ssl=ctx, server_hostname="a.example.com")
    assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == "h2"
    client = H2Client(reader, writer)
    client.conn.initiate_connection()
    client.flush()
    client._pump = asyncio.get_running_loop().create_task(client._read_forever())
    try:
        answer = await client.request("/api/echo/x", headers=[("x-forwarded-proto", "http")])
    finally:
        await client.close()
    assert answer.status == 200
    assert answer.body == b"https"
    assert answer.header("strict-transport-security") is not None
