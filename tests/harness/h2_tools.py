"""An HTTP/2 client for tests of the gateway's HTTP/2 server: h2's client
state machine over a raw asyncio connection (h2c prior knowledge, or TLS with
ALPN h2 using a trustme test CA), with helpers to send raw frames (hyperframe)
for the attack tests, and a TLS context for the gateway's side."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trustme
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    InformationalResponseReceived,
    PingAckReceived,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
)
from h2.exceptions import H2Error
from hpack import Encoder
from hyperframe.frame import Frame, HeadersFrame, SettingsFrame

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


#: RFC 9113 §7 error codes the tests read in RST_STREAM and GOAWAY frames.
PROTOCOL_ERROR = 1
CANCEL = 8
REFUSED_STREAM = 7
ENHANCE_YOUR_CALM = 11


def tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context with ALPN h2 + http/1.1, client context trusting it) for 127.0.0.1."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server)
    server.set_alpn_protocols(["h2", "http/1.1"])
    client = ssl.create_default_context()
    ca.configure_trust(client)
    client.set_alpn_protocols(["h2"])
    return server, client


def write_ca(tmp: str) -> tuple[ssl.SSLContext, str, str, str]:
    """A server context plus the PEM paths of (CA, certificate chain, key) for external clients."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server)
    server.set_alpn_protocols(["h2", "http/1.1"])
    ca_path, chain_path, key_path = f"{tmp}/ca.pem", f"{tmp}/chain.pem", f"{tmp}/key.pem"
    ca.cert_pem.write_to_path(ca_path)
    with open(chain_path, "wb") as out:
        for blob in cert.cert_chain_pems:
            out.write(blob.bytes())
    cert.private_key_pem.write_to_path(key_path)
    return server, ca_path, chain_path, key_path


@dataclass
class Answer:
    status: int = 0
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    trailers: list[tuple[str, str]] = field(default_factory=list)
    reset: int | None = None
    ended: bool = False
    informational: list[int] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name), None)


class H2Client:
    """A client connection; `request` sends one request and waits for its end."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.conn = H2Connection(H2Configuration(client_side=True, header_encoding="utf-8"))
        self.answers: dict[int, Answer] = {}
        self.goaway: ConnectionTerminated | None = None
        self.pongs = 0
        self.closed = False
        self._changed = asyncio.Event()
        self._pump: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, port: int, tls: ssl.SSLContext | None = None) -> H2Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls,
                                                       server_hostname="127.0.0.1" if tls else None)
        client = cls(reader, writer)
        client.conn.initiate_connection()
        client.flush()
        client._pump = asyncio.get_running_loop().create_task(client._read_forever())
        return client

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(data)

    async def _read_forever(self) -> None:
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    break
                try:
                    events = self.conn.receive_data(data)
                except H2Error:
                    break
                for event in events:
                    self._on(event)
                self.flush()
                self._changed.set()
        except (ConnectionError, OSError):
            pass
        finally:
            self.closed = True
            self._changed.set()

    def _on(self, event: object) -> None:
        sid = getattr(event, "stream_id", None)
        answer = self.answers.setdefault(sid, Answer()) if sid else None
        if isinstance(event, ResponseReceived) and answer is not None:
            answer.headers = [(k, v) for k, v in event.headers or []]  # type: ignore[misc]
            answer.status = int(dict(answer.headers)[":status"])
        elif isinstance(event, InformationalResponseReceived) and answer is not None:
            status = next(v for k, v in event.headers or [] if k in (":status", b":status"))
            answer.informational.append(int(status))
        elif isinstance(event, DataReceived) and answer is not None:
            answer.body += event.data or b""
            self.conn.acknowledge_received_data(event.flow_controlled_length or 0, sid or 0)
        elif isinstance(event, TrailersReceived) and answer is not None:
            answer.trailers = [(k, v) for k, v in event.headers or []]  # type: ignore[misc]
        elif isinstance(event, StreamEnded) and answer is not None:
            answer.ended = True
        elif isinstance(event, StreamReset) and answer is not None:
            answer.reset = int(event.error_code or 0)
            answer.ended = True
        elif isinstance(event, ConnectionTerminated):
            self.goaway = event
        elif isinstance(event, PingAckReceived):
            self.pongs += 1

    async def barrier(self, deadline_s: float = 5.0) -> None:
        """A PING round trip: everything the gateway sent before its ACK has been processed."""
        expected = self.pongs + 1
        self.conn.ping(b"barrier!")
        self.flush()

        async def acked() -> None:
            while self.pongs < expected:
                if self.closed:
                    raise ConnectionError("the connection closed")
                self._changed.clear()
                await self._changed.wait()
        await asyncio.wait_for(acked(), deadline_s)

    def start(self, path: str, method: str = "GET", headers: list[tuple[str, str]] | None = None,
              body: bytes | None = None, authority: str = "gw.test", more: bool = False) -> int:
        """Open a stream; `more`: the body follows (the caller sends it)."""
        sid = self.conn.get_next_available_stream_id()
        fields = [(":method", method), (":scheme", "http"), (":authority", authority), (":path", path),
                  *(headers or [])]
        self.conn.send_headers(sid, fields, end_stream=body is None and not more)
        self.answers[sid] = Answer()
        if body is not None:
            self.conn.send_data(sid, body, end_stream=True)
        self.flush()
        return sid

    async def wait(self, sid: int, deadline_s: float = 5.0) -> Answer:
        async def ended() -> Answer:
            while not self.answers[sid].ended:
                if self.closed:
                    raise ConnectionError(f"the connection closed before stream {sid} ended")
                self._changed.clear()
                await self._changed.wait()
            return self.answers[sid]
        return await asyncio.wait_for(ended(), deadline_s)

    async def wait_informational(self, sid: int, deadline_s: float = 5.0) -> list[int]:
        """Wait for an interim (1xx) answer on `sid`."""
        async def interim() -> list[int]:
            while not self.answers[sid].informational:
                if self.closed or self.answers[sid].ended:
                    raise ConnectionError(f"stream {sid} ended without an interim answer")
                self._changed.clear()
                await self._changed.wait()
            return self.answers[sid].informational
        return await asyncio.wait_for(interim(), deadline_s)

    async def request(self, path: str, method: str = "GET", headers: list[tuple[str, str]] | None = None,
                      body: bytes | None = None, deadline_s: float = 5.0) -> Answer:
        return await self.wait(self.start(path, method, headers, body), deadline_s)

    async def wait_closed(self, deadline_s: float = 5.0) -> None:
        async def closed() -> None:
            while not self.closed:
                self._changed.clear()
                await self._changed.wait()
        await asyncio.wait_for(closed(), deadline_s)

    async def close(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            await asyncio.gather(self._pump, return_exceptions=True)
        self.writer.close()


class RawH2:
    """A raw socket speaking frames the test builds itself (hyperframe), reading
    whatever the gateway answers; for attacks that a well-behaved client library
    refuses to send."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.received = bytearray()
        self.encoder = Encoder()

    def headers(self, sid: int, path: str = "/api/x", end: bool = True, method: str = "GET",
                extra: list[tuple[str, str]] | None = None) -> HeadersFrame:
        """A HEADERS frame of a whole request head (END_HEADERS), encoded with this connection's HPACK state."""
        frame = HeadersFrame(sid)
        frame.data = self.encoder.encode([(":method", method), (":scheme", "http"), (":authority", "gw.test"),
                                          (":path", path), *(extra or [])])
        frame.flags.add("END_HEADERS")
        if end:
            frame.flags.add("END_STREAM")
        return frame

    @classmethod
    async def open(cls, port: int, preface: bytes = PREFACE) -> RawH2:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        raw = cls(reader, writer)
        writer.write(preface + SettingsFrame(0).serialize())
        return raw

    def send(self, *frames: object) -> None:
        for frame in frames:
            self.writer.write(frame.serialize())  # type: ignore[attr-defined]

    async def drain(self) -> bool:
        """False once the gateway closed the connection."""
        try:
            await self.writer.drain()
            return True
        except (ConnectionError, OSError):
            return False

    async def read_until(self, check: Callable[[list[Any]], bool], deadline_s: float = 5.0) -> list[Any]:
        """Read until `check(frames)` holds (or fail at the deadline, or when the connection closed)."""
        async def read() -> list[Any]:
            while not check(frames := self.frames()):
                data = await self.reader.read(65536)
                if not data:
                    raise ConnectionError("the gateway closed the connection")
                self.received += data
            return frames
        return await asyncio.wait_for(read(), deadline_s)

    async def read_until_closed(self, deadline_s: float = 5.0) -> bytes:
        async def read() -> None:
            while True:
                try:
                    data = await self.reader.read(65536)
                except (ConnectionError, OSError):
                    return
                if not data:
                    return
                self.received += data
        await asyncio.wait_for(read(), deadline_s)
        return bytes(self.received)

    async def closed_cleanly(self, deadline_s: float = 5.0) -> bool:
        """Read until the gateway closes: True for an orderly close (FIN), False for a reset."""
        async def read() -> bool:
            while True:
                try:
                    data = await self.reader.read(65536)
                except ConnectionResetError:
                    return False
                if not data:
                    return True
                self.received += data
        return await asyncio.wait_for(read(), deadline_s)

    def frames(self) -> list[Any]:
        """The frames received so far."""
        return self.parse(bytes(self.received))

    @staticmethod
    def parse(data: bytes) -> list[Any]:
        """The whole frames at the start of `data`."""
        out: list[Any] = []
        i = 0
        while len(data) - i >= 9:
            frame, length = Frame.parse_frame_header(memoryview(data[i:i + 9]))
            if len(data) - i - 9 < length:
                break
            frame.parse_body(memoryview(data[i + 9:i + 9 + length]))
            out.append(frame)
            i += 9 + length
        return out

    def close(self) -> None:
        self.writer.close()
