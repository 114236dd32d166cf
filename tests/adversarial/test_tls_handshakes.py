"""Hostile clients on the TLS listener: silence, a partial ClientHello, plain
HTTP bytes, floods of aborted handshakes, renegotiation. Each is bounded: the
socket is closed within the handshake deadline, nothing is logged per client
at warning level, descriptors and live objects return to where they were, and
the listener keeps serving real clients. Every case runs on asyncio's loop
and on uvloop (what the CLI uses)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import socket
import struct
import time
from pathlib import Path

import pytest

from tests.harness.app_fixtures import poll
from tests.harness.tls_fixtures import TlsGatewayFactory, ca, event_loop_policy, tls_gateway
from tests.harness.tls_tools import TestCa, TlsClient, open_fds, s_client
from vocelio_proxy.wire.server import HttpConnection
from vocelio_proxy.wire.tls import TlsHandshake

__all__ = ["ca", "event_loop_policy", "tls_gateway"]  # fixtures

DEADLINE_S = 1.0


def _client_hello_prefix() -> bytes:
    """The first bytes of a real TLS ClientHello record: a handshake record header
    announcing 512 bytes, and the start of the handshake message."""
    return struct.pack("!BHH", 22, 0x0301, 512) + b"\x01\x00\x01\xfc\x03\x03" + b"\x00" * 10


async def _closed_within(port: int, send: bytes, limit_s: float) -> float:
    """Connect, send `send` (maybe nothing), and return when the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    if send:
        writer.write(send)
    try:
        while await asyncio.wait_for(reader.read(4096), limit_s):
            pass
    except (ConnectionResetError, TimeoutError) as exc:
        if isinstance(exc, TimeoutError):
            raise AssertionError(f"the server kept the socket past {limit_s} s") from None
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return time.monotonic() - started


@pytest.mark.parametrize("sent", [b"", _client_hello_prefix()], ids=["silent", "partial-client-hello"])
async def test_a_client_that_stalls_its_handshake_is_closed_within_the_deadline(
        tls_gateway: TlsGatewayFactory, ca: TestCa, sent: bytes) -> None:
    gw = await tls_gateway({"a": ca.issue("a.example.com")}, tls={"handshake_timeout_s": DEADLINE_S})
    server = gw.running.tls.server if gw.running.tls else None
    assert server is not None
    baseline = open_fds()
    took = await _closed_within(gw.tls_port, sent, DEADLINE_S + 2)
    assert took >= DEADLINE_S * 0.8, "closed before the deadline: the test proves nothing"
    await poll(lambda: not server.handshakes and open_fds() <= baseline, "handshake slot and fd released")
    assert server.handshake_failures.get("timeout") == 1


async def test_plain_http_sent_to_the_tls_port_is_closed_at_once_and_counted(
        tls_gateway: TlsGatewayFactory, ca: TestCa) -> None:
    gw = await tls_gateway({"a": ca.issue("a.example.com")}, tls={"handshake_timeout_s": 10})
    server = gw.running.tls.server if gw.running.tls else None
    assert server is not None
    took = await _closed_within(gw.tls_port, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 5)
    assert took < 5
    await poll(lambda: server.handshake_failures.get("protocol") == 1, "the protocol failure counted")
    assert not server.handshakes
    assert not server.connections
    handshake = await s_client(gw.tls_port, servername="a.example.com", ca_file=gw.ca_file)
    assert handshake.ok


async def test_a_flood_of_aborted_handshakes_leaves_descriptors_and_objects_flat(
        tls_gateway: TlsGatewayFactory, ca: TestCa, caplog: pytest.LogCaptureFixture) -> None:
    gw = await tls_gateway({"a": ca.issue("a.example.com")}, tls={"handshake_timeout_s": DEADLINE_S})
    server = gw.running.tls.server if gw.running.tls else None
    assert server is not None
    # Warm up once so lazily created objects do not count as growth.
    client = await TlsClient.connect(gw.tls_port, gw.ca_file)
    await client.request("/readyz")
    await client.close()
    await poll(lambda: not server.connections, "the warm-up connection closed")
    gc.collect()
    fds = open_fds()
    hello = _client_hello_prefix()

    async def abort(i: int) -> None:
        sock = socket.socket()
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", gw.tls_port))
        if i % 3 == 1:
            sock.send(hello)
        elif i % 3 == 2:
            sock.send(b"\x16\x03\x01\x00\x05garbage-not-tls")
        # Close with a reset (SO_LINGER 0): the rudest way to leave.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()

    with caplog.at_level(logging.WARNING):
        for round_ in range(5):
            await asyncio.gather(*(abort(i + round_) for i in range(100)))
        await poll(lambda: not server.handshakes and not server.connections, "every handshake ended",
                   DEADLINE_S + 5)
    gc.collect()
    await poll(lambda: open_fds() <= fds, "descriptors back to the baseline")
    live = sum(isinstance(o, TlsHandshake | HttpConnection) for o in gc.get_objects())
    assert live <= 1, f"{live} handshake/connection objects outlived their sockets"
    assert sum(server.handshake_failures.values()) >= 400
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], "a failed handshake was logged loudly"
    handshake = await s_client(gw.tls_port, servername="a.example.com", ca_file=gw.ca_file)
    assert handshake.ok


async def test_handshakes_in_progress_count_against_the_connection_cap(
        tls_gateway: TlsGatewayFactory, ca: TestCa) -> None:
    gw = await tls_gateway({"a": ca.issue("a.example.com")}, tls={"handshake_timeout_s": 2.0},
                           limits={"max_client_connections": 3})
    server = gw.running.tls.server if gw.running.tls else None
    assert server is not None
    held = [await asyncio.open_connection("127.0.0.1", gw.tls_port) for _ in range(3)]
    try:
        await poll(lambda: len(server.handshakes) == 3, "three silent handshakes held")
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.tls_port)
        assert await asyncio.wait_for(reader.read(100), 2) == b"", "a socket over the cap was kept"
        writer.close()
        assert server.refused_connections == 1
        # When the silent ones time out their slots come back.
        await poll(lambda: not server.handshakes, "silent handshakes timed out", 5)
        assert (await s_client(gw.tls_port, servername="a.example.com", ca_file=gw.ca_file)).ok
    finally:
        for _, w in held:
            w.close()


async def _s_client_session(port: int, ca_file: Path, lines: list[bytes], *, commands: bool) -> str:
    """An `openssl s_client` TLS 1.2 session to a.example.com: `lines` are written in turn (after
    an `R` line, only once s_client says it is renegotiating, and none once it has ended the
    session), then stdin closes. With `commands`, s_client reads `R` as its renegotiate command
    (and quits at the end of stdin); without, it sends every line as data and waits for the
    server to close. Returns everything s_client printed."""
    proc = await asyncio.create_subprocess_exec(
        "openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "a.example.com", "-tls1_2",
        *([] if commands else ["-ign_eof"]), "-CAfile", str(ca_file), stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    assert proc.stdin is not None
    assert proc.stdout is not None
    seen = b""
    for line in lines:
        if proc.stdout.at_eof():
            break  # s_client ended the session (the server's alert): nothing more can be sent
        proc.stdin.write(line)
        await proc.stdin.drain()
        if line == b"R\n":
            # The request goes only after s_client has started the renegotiation, so the
            # answer to it (and not a request that raced ahead) decides what is served.
            while b"RENEGOTIATING" not in seen:
                chunk = await asyncio.wait_for(proc.stdout.read(4096), 10)
                if not chunk:
                    break
                seen += chunk
    proc.stdin.close()
    out, _ = await asyncio.wait_for(proc.communicate(), 15)
    return (seen + out).decode(errors="replace")


_READYZ = b"GET /readyz HTTP/1.1\r\nHost: a.example.com\r\nConnection: close\r\n\r\n"


async def test_client_initiated_renegotiation_is_refused(tls_gateway: TlsGatewayFactory, ca: TestCa) -> None:
    gw = await tls_gateway({"a": ca.issue("a.example.com")})
    # The control: the same session without renegotiating is served, so "not served" below can fail.
    plain = await _s_client_session(gw.tls_port, gw.ca_file, [_READYZ], commands=False)
    assert "HTTP/1.1 200" in plain
    text = await _s_client_session(gw.tls_port, gw.ca_file, [b"R\n", _READYZ], commands=True)
    assert "RENEGOTIATING" in text
    assert "HTTP/1.1 200" not in text, "a renegotiated session was served"
    # The server's answer is the no_renegotiation alert (s_client: "...:no renegotiation:..."). Two
    # layers give it: the gateway's OP_NO_RENEGOTIATION and OpenSSL 3's own default (client
    # renegotiation needs SSL_OP_ALLOW_CLIENT_RENEGOTIATION), so clearing the gateway's flag
    # alone does not fail this test (checked); the property users rely on is what it asserts.
    assert "no renegotiation" in text


async def test_a_request_sent_with_the_last_handshake_flight_is_served(
        tls_gateway: TlsGatewayFactory, ca: TestCa) -> None:
    """The client's Finished and its request in one TCP segment: the bytes that reach the
    TLS layer with the end of the handshake are handed to the connection, not lost."""
    import ssl

    gw = await tls_gateway({"a": ca.issue("a.example.com")})
    ctx = ssl.create_default_context(cafile=str(gw.ca_file))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="a.example.com")
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.tls_port)
    try:
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                if outgoing.pending:
                    writer.write(outgoing.read())
                data = await asyncio.wait_for(reader.read(65536), 5)
                assert data, "the server closed during the handshake"
                incoming.write(data)
        # The Finished (still in the BIO) and the request leave together.
        tls.write(b"GET /readyz HTTP/1.1\r\nHost: a.example.com\r\nConnection: close\r\n\r\n")
        writer.write(outgoing.read())
        answer = b""
        while b"\r\n\r\n" not in answer:
            data = await asyncio.wait_for(reader.read(65536), 5)
            assert data, f"closed before an answer: {answer!r}"
            incoming.write(data)
            with contextlib.suppress(ssl.SSLWantReadError):
                answer += tls.read(65536)
        assert answer.startswith(b"HTTP/1.1 200 ")
    finally:
        writer.close()
