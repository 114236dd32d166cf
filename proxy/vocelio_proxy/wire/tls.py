"""The TLS edge of the client-facing server: the TLS policy of every server
context (versions, ciphers, ALPN, tickets, no compression or renegotiation),
certificates chosen by SNI through a swappable table, and the handshake phase
of a connection accepted on the TLS listener. Used by `server.HttpServer.listen`
(`ssl=`) and fed certificates by `process.tls_certificates`.

Why the handshake is run here (`loop.start_tls` per accepted connection) and
not by `create_server(ssl=...)`: asyncio never tells the application about a
connection whose handshake failed or timed out, so a server protocol created
for it could not be forgotten, and a flood of aborted handshakes would hold
slots of the connection cap for as long as a timer. Here every accepted socket
is counted from accept to the end of its handshake and then, if it succeeded,
as a connection, exactly; a failed handshake frees its slot and descriptor at
once.

Server names that are not ASCII: CPython decodes the ClientHello's SNI before
the callback runs and, when it cannot, fails the handshake and prints a traceback
to stderr through `sys.unraisablehook` ("Exception ignored in ..."), once per
handshake and outside the gateway's logs. `quiet_undecodable_server_names`
(installed by the composition root with the listener) drops exactly those; the
handshake still fails and is counted (`protocol`).

Rotation: `TlsEdge.install` swaps the whole SNI table (one reference), so a
handshake uses the old set or the new one, never a mix; connections already
open keep the certificate they were served.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import sys
import tempfile
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from vocelio_proxy.policy.sni import SniTable

__all__ = ["HeldProtocol", "TlsEdge", "TlsHandshake", "TlsPolicy", "load_pair", "quiet_undecodable_server_names",
           "server_context"]

log = logging.getLogger("vocelio.proxy.tls")


def _undecodable_server_name(unraisable: Any) -> bool:
    """The unraisable error is CPython's SNI wrapper failing to decode a ClientHello's
    host name: it reports the raw name as the object, which is also what failed to decode."""
    exc = unraisable.exc_value
    return isinstance(exc, UnicodeDecodeError) and isinstance(unraisable.object, bytes) \
        and exc.object == unraisable.object


class _QuietServerNames:
    """A `sys.unraisablehook` that drops undecodable server names and hands every other
    unraisable error to the hook it replaced."""

    def __init__(self, previous: Callable[[Any], object]) -> None:
        self.previous = previous

    def __call__(self, unraisable: Any) -> None:
        if _undecodable_server_name(unraisable):
            # The client's bytes are not logged: a client chose them.
            log.debug("TLS handshake refused: the ClientHello's server name is not ASCII")
            return
        self.previous(unraisable)


def quiet_undecodable_server_names() -> None:
    """Install the filter on `sys.unraisablehook` (once: a second call leaves it as it is).
    Process-wide by nature (CPython has one hook); called when a TLS listener starts."""
    if not isinstance(sys.unraisablehook, _QuietServerNames):
        sys.unraisablehook = _QuietServerNames(sys.unraisablehook)


class TlsPolicy(NamedTuple):
    """What every server context of the listener enforces (from `TlsSettings`)."""

    min_version: str = "TLSv1.2"
    ciphers: str = ""
    alpn: tuple[str, ...] = ("http/1.1",)
    session_tickets: bool = False


def server_context(policy: TlsPolicy) -> ssl.SSLContext:
    """A server context with the policy and no certificate yet."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3 if policy.min_version == "TLSv1.3" else ssl.TLSVersion.TLSv1_2
    if policy.ciphers:
        ctx.set_ciphers(policy.ciphers)
    # No TLS compression (CRIME), no renegotiation (a CPU lever for attackers, and never
    # needed without client certificates). (OpenSSL makes a fresh ECDHE key per handshake.)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    if not policy.session_tickets:
        # Resumption stays possible through the process's session cache (stateful, TLS 1.2 and 1.3);
        # no ticket key that lives as long as the process and would unlock past sessions.
        ctx.options |= ssl.OP_NO_TICKET
    ctx.set_alpn_protocols(list(policy.alpn))
    return ctx


def _no_password() -> bytes:
    # A kubernetes.io/tls key is never encrypted; an encrypted one fails instead of prompting on a tty.
    raise ssl.SSLError("the private key is encrypted")


@contextlib.contextmanager
def _secret_files(cert_pem: bytes, key_pem: bytes) -> Iterator[tuple[str, str]]:
    """Paths OpenSSL can read the pair from. On Linux anonymous memory files
    (memfd): the key never touches a filesystem; elsewhere a private 0700
    directory removed at once."""
    memfd = getattr(os, "memfd_create", None)
    if memfd is not None and Path("/proc/self/fd").is_dir():
        fds = [memfd("vocelio-tls-cert", os.MFD_CLOEXEC), memfd("vocelio-tls-key", os.MFD_CLOEXEC)]
        try:
            for fd, data in zip(fds, (cert_pem, key_pem), strict=True):
                os.write(fd, data)
            yield f"/proc/self/fd/{fds[0]}", f"/proc/self/fd/{fds[1]}"
        finally:
            for fd in fds:
                os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="vocelio-tls-") as tmp:  # pragma: no cover - non-Linux
        cert_path, key_path = Path(tmp, "tls.crt"), Path(tmp, "tls.key")
        cert_path.write_bytes(cert_pem)
        key_path.touch(mode=0o600)
        key_path.write_bytes(key_pem)
        yield str(cert_path), str(key_path)


def load_pair(policy: TlsPolicy, cert_pem: bytes, key_pem: bytes) -> ssl.SSLContext:
    """A server context serving this certificate chain and key. Raises `ssl.SSLError`
    (or `OSError`) when OpenSSL refuses them; the message never holds key material."""
    ctx = server_context(policy)
    with _secret_files(cert_pem, key_pem) as (cert_path, key_path):
        ctx.load_cert_chain(cert_path, key_path, password=_no_password)
    return ctx


class TlsEdge:
    """The listener's context and the SNI table it serves from. `context` goes to
    `HttpServer.listen(ssl=...)`; its SNI callback points each handshake at the
    chosen certificate's context. `install` replaces the table atomically."""

    def __init__(self, policy: TlsPolicy) -> None:
        self.policy = policy
        self.table: SniTable[ssl.SSLContext] | None = None
        self.context = server_context(policy)
        self.context.sni_callback = self._sni

    def install(self, table: SniTable[ssl.SSLContext]) -> None:
        self.table = table

    def _sni(self, sslobj: ssl.SSLObject | ssl.SSLSocket, server_name: str | None,
             ctx: ssl.SSLContext) -> int | None:
        # Called by OpenSSL for every ClientHello, with or without SNI.
        table = self.table
        if table is None:
            return ssl.ALERT_DESCRIPTION_INTERNAL_ERROR
        sslobj.context = table.choose(server_name)
        return None


class HeldProtocol(asyncio.Protocol):
    """Holds what the TLS layer delivers between the end of the handshake and the
    moment the connection protocol takes over (asyncio may deliver application
    data in the same loop iteration as the handshake's end)."""

    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.eof = False
        self.lost = False
        self.lost_exc: Exception | None = None
        self.write_paused = False

    def data_received(self, data: bytes) -> None:
        self.data.append(data)

    def eof_received(self) -> bool | None:
        self.eof = True
        return True  # the connection protocol decides once it takes over

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.lost_exc = exc

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False


class _Acceptor(Protocol):
    """What a handshake needs from the server (`server.HttpServer`)."""

    loop: asyncio.AbstractEventLoop
    handshakes: set[TlsHandshake]

    def established(self, transport: asyncio.Transport, held: HeldProtocol) -> None: ...

    def handshake_failed(self, reason: str) -> None: ...


class TlsHandshake(asyncio.Protocol):
    """A TCP connection accepted on the TLS listener, from accept to the end of its
    handshake (counted in `server.handshakes`). The handshake must end within
    `timeout_s`, else the socket is closed (the TLS layer's handshake timer).

    The TLS layer takes the socket over inside `connection_made`: `loop.start_tls`
    is stepped there by hand up to its first wait (its synchronous part swaps the
    socket's protocol for the TLS one), and then on from its future's callbacks.
    A task would first run on a later loop pass, and uvloop starts reading a socket
    as soon as `connection_made` returns: the ClientHello would reach this protocol
    instead of the TLS layer and be lost. No task exists per handshake, so there is
    nothing to own beyond the transport, which `abort` closes."""

    def __init__(self, server: _Acceptor, context: ssl.SSLContext, timeout_s: float) -> None:
        self._server = server
        self._context = context
        self._timeout_s = timeout_s
        self.transport: asyncio.Transport | None = None
        self._held = HeldProtocol()
        self._done = False
        server.handshakes.add(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._step(self._server.loop.start_tls(
            transport, self._held, self._context, server_side=True,  # type: ignore[arg-type]
            ssl_handshake_timeout=self._timeout_s, ssl_shutdown_timeout=self._timeout_s))

    def data_received(self, data: bytes) -> None:  # pragma: no cover - the TLS layer owns the socket by now
        self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        # Only if the socket died before the TLS layer took it over.
        self._finish(None, ConnectionResetError("closed before the handshake"))

    def _step(self, coro: Coroutine[object, None, asyncio.Transport | None]) -> None:
        """Run `coro` to its next wait; resume it when what it waits for is done."""
        try:
            waited = coro.send(None)
        except StopIteration as done:
            self._finish(done.value, None)
            return
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # the handshake's own failure (timeout, TLS alert, reset)
            self._finish(None, exc)
            return
        if not isinstance(waited, asyncio.Future):  # pragma: no cover - start_tls only awaits futures
            coro.close()
            self._finish(None, RuntimeError(f"start_tls waited on {type(waited).__name__}"))
            return
        # The protocol of a future awaited by a coroutine (what asyncio.Task does).
        waited._asyncio_future_blocking = False
        waited.add_done_callback(lambda _: self._step(coro))

    def _finish(self, tls: asyncio.Transport | None, exc: BaseException | None) -> None:
        if self._done:
            return
        self._done = True
        server = self._server
        server.handshakes.discard(self)
        if exc is None and tls is not None and not self._held.lost:
            server.established(tls, self._held)
            return
        if self.transport is not None:
            self.transport.abort()
        if tls is not None:
            tls.abort()
        if isinstance(exc, ConnectionAbortedError | TimeoutError):
            server.handshake_failed("timeout")
        elif isinstance(exc, ssl.SSLError):
            server.handshake_failed("protocol")
        else:  # the client left mid-handshake (reset, EOF), or the server is stopping
            server.handshake_failed("reset")

    def abort(self) -> None:
        """Drop the handshake (shutdown): the TLS layer sees the socket close and ends."""
        if self.transport is not None:
            self.transport.abort()
