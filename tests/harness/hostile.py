"""Tools for hostile tests (tests/adversarial, tests/faults): an upstream that
records exactly what reached it (parsed by h11, the strict reference), raw
socket clients that send exact bytes, and counters of the gateway's resources
(file descriptors, RSS, in-flight requests, pooled connections, endpoint
in-flight counts, breaker states) to compare before and after an attack.

Used as plain helpers and through the `recording_upstream` fixture (loaded
from tests/conftest.py with the other app fixtures)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import h11
import psutil
import pytest
from aiohttp import web

from vocelio_contract.config import Endpoint
from vocelio_proxy.lifecycle import appkeys as keys


@dataclass
class Received:
    """One request as the upstream saw it, after h11 parsed it."""

    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes
    trailers: list[tuple[str, str]]

    def header(self, name: str) -> list[str]:
        lower = name.lower()
        return [v for k, v in self.headers if k.lower() == lower]


Responder = Callable[[Received], Awaitable[tuple[int, list[tuple[str, str]], bytes]]]


async def echo_responder(req: Received) -> tuple[int, list[tuple[str, str]], bytes]:
    body = json.dumps({"method": req.method, "target": req.target, "headers": req.headers,
                       "body": len(req.body)}).encode()
    return 200, [("Content-Type", "application/json")], body


@dataclass
class RecordingUpstream:
    """A strict HTTP/1.1 upstream (h11) that records every request it received,
    raw bytes included, and every connection it accepted."""

    port: int = 0
    requests: list[Received] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)
    connections: int = 0
    protocol_errors: list[str] = field(default_factory=list)
    responder: Responder = echo_responder

    def endpoint(self, weight: int = 1) -> Endpoint:
        return Endpoint(address="127.0.0.1", port=self.port, weight=weight)

    def paths(self) -> list[str]:
        return [r.target for r in self.requests]

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn = h11.Connection(h11.SERVER)
        raw = bytearray()
        self.raw.append(b"")
        index = len(self.raw) - 1
        current: Received | None = None
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await reader.read(65536)
                    raw.extend(data)
                    self.raw[index] = bytes(raw)
                    conn.receive_data(data)
                    if not data:
                        continue
                    continue
                if isinstance(event, h11.ConnectionClosed):
                    return
                if isinstance(event, h11.Request):
                    current = Received(event.method.decode(), event.target.decode("latin-1"),
                                       [(k.decode(), v.decode("latin-1")) for k, v in event.headers.raw_items()],
                                       b"", [])
                elif isinstance(event, h11.Data) and current is not None:
                    current.body += bytes(event.data)
                elif isinstance(event, h11.EndOfMessage) and current is not None:
                    current.trailers = [(k.decode(), v.decode("latin-1")) for k, v in event.headers.raw_items()]
                    self.requests.append(current)
                    status, headers, body = await self.responder(current)
                    current = None
                    headers = [*headers, ("Content-Length", str(len(body)))]
                    writer.write(conn.send(h11.Response(status_code=status, headers=headers)) or b"")
                    writer.write(conn.send(h11.Data(data=body)) or b"")
                    writer.write(conn.send(h11.EndOfMessage()) or b"")
                    await writer.drain()
                    if conn.our_state is h11.MUST_CLOSE:
                        return
                    conn.start_next_cycle()
        except h11.RemoteProtocolError as exc:
            self.protocol_errors.append(str(exc))
        except h11.LocalProtocolError as exc:
            self.protocol_errors.append(f"local: {exc}")
        except ConnectionError:
            pass
        finally:
            writer.close()


#: What the `recording_upstream` fixture gives a test: `await make(responder=echo_responder)`.
RecordingUpstreamFactory = Callable[..., Awaitable[RecordingUpstream]]


@pytest.fixture
async def recording_upstream() -> AsyncIterator[RecordingUpstreamFactory]:
    servers: list[asyncio.Server] = []

    async def make(responder: Responder = echo_responder) -> RecordingUpstream:
        up = RecordingUpstream(responder=responder)
        server = await asyncio.start_server(up.serve, "127.0.0.1", 0)
        servers.append(server)
        up.port = int(server.sockets[0].getsockname()[1])
        return up

    yield make
    for server in servers:
        server.close()


async def raw_request(port: int, data: bytes | list[bytes], *, read_timeout_s: float = 3.0,
                      pause_s: float = 0.0, host: str = "127.0.0.1") -> bytes:
    """Send exact bytes (a list is sent piece by piece, `pause_s` apart) and read
    until the gateway closes the connection or `read_timeout_s` passes."""
    reader, writer = await asyncio.open_connection(host, port)
    pieces = data if isinstance(data, list) else [data]
    try:
        for piece in pieces:
            writer.write(piece)
            await writer.drain()
            if pause_s:
                await asyncio.sleep(pause_s)
        out = bytearray()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + read_timeout_s
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                chunk = await asyncio.wait_for(reader.read(65536), remaining)
            except TimeoutError:
                break
            except ConnectionError:
                break
            if not chunk:
                break
            out.extend(chunk)
        return bytes(out)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def status_of(answer: bytes) -> int:
    """The status code of the first response in `answer` (0 when nothing came back)."""
    if not answer.startswith(b"HTTP/"):
        return 0
    return int(answer.split(b" ", 2)[1])


def statuses_of(answer: bytes) -> list[int]:
    """The status codes of every response head in `answer`, in order."""
    out = []
    for line in answer.split(b"\r\n"):
        if line.startswith(b"HTTP/1.1 ") or line.startswith(b"HTTP/1.0 "):
            parts = line.split(b" ", 2)
            if len(parts) >= 2 and parts[1].isdigit():
                out.append(int(parts[1]))
    return out


@dataclass(frozen=True)
class Resources:
    """What an attack could leak, read from the gateway process and app state."""

    fds: int
    rss: int
    in_flight: int
    endpoint_in_flight: int
    breakers: dict[str, str]
    client_connections: int
    #: Half-open probe slots held across services (a leaked admission would hold one).
    probe_slots: int = 0

    def leaks_against(self, before: Resources, *, fd_slack: int = 4) -> list[str]:
        problems = []
        if self.fds > before.fds + fd_slack:
            problems.append(f"file descriptors {before.fds} -> {self.fds}")
        if self.in_flight != before.in_flight:
            problems.append(f"in_flight {before.in_flight} -> {self.in_flight}")
        if self.endpoint_in_flight != before.endpoint_in_flight:
            problems.append(f"endpoint in_flight {before.endpoint_in_flight} -> {self.endpoint_in_flight}")
        if self.probe_slots > before.probe_slots:
            problems.append(f"breaker probe slots {before.probe_slots} -> {self.probe_slots}")
        return problems


def resources(app: web.Application, server: object | None = None) -> Resources:
    """Counters now; pass the gateway's `HttpServer` to count client connections."""
    state = app[keys.STATE]
    rt = state.runtime
    ep_in_flight = 0
    breakers: dict[str, str] = {}
    probes = 0
    if rt is not None:
        for sid, svc in rt.services.items():
            ep_in_flight += sum(ep.in_flight for ep in svc.balancer.endpoints())
            breakers[sid] = svc.breaker.state.value
            probes += svc.breaker.probes_in_flight
    conns = len(getattr(server, "connections", ())) if server is not None else -1
    return Resources(
        fds=len(os.listdir("/proc/self/fd")),
        rss=psutil.Process().memory_info().rss,
        in_flight=app[keys.METRICS].in_flight_count,
        endpoint_in_flight=ep_in_flight,
        breakers=breakers,
        client_connections=conns,
        probe_slots=probes,
    )


async def settled(app: web.Application, before: Resources, deadline_s: float = 5.0,
                  fd_slack: int = 4) -> Resources:
    """Poll until nothing leaks against `before` (connections take a moment to close);
    fail with the leaks found at the deadline."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while True:
        now = resources(app)
        problems = now.leaks_against(before, fd_slack=fd_slack)
        if not problems:
            return now
        if loop.time() >= end:
            raise AssertionError("resources leaked: " + "; ".join(problems))
        await asyncio.sleep(0.05)
