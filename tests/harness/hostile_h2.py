"""A hostile HTTP/2 (h2c) upstream for adversarial tests of the gateway's h2c
client: it speaks enough HTTP/2 (the `h2` library, server side) to be reached,
then misbehaves the way `behaviour` says, and records what the gateway did
(streams reset, connections closed, bytes it managed to push).

Behaviours:
* `huge-headers`: answers with a 40 KB header block (over a 16 KB limit);
* `continuation-flood`: a HEADERS frame without END_HEADERS, then CONTINUATION
  frames until the gateway hangs up;
* `endless-stream`: a 200 head, then DATA for ever, as fast as the gateway's
  flow control lets it;
* `closed-window`: advertises a zero stream window (the request body can never
  be sent) and never answers;
* `silent`: accepts the stream and never answers;
* `plain-503`: answers 503 with a text body and no `grpc-status` (a proxy's page);
* `ping-flood`: answers nothing, sends PING frames without end and never reads
  again, so the gateway's PING ACKs pile up.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import pytest
from hyperframe.frame import ContinuationFrame, HeadersFrame, PingFrame


@dataclass
class Seen:
    streams: int = 0
    resets: int = 0
    connections: int = 0
    closed: int = 0
    pushed: int = 0
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


class HostileH2:
    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour
        self.seen = Seen()
        self.server: asyncio.Server | None = None
        #: False once the upstream stops reading the connection (ping-flood).
        self.reading = True
        self.port = 0

    async def start(self) -> HostileH2:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self.server.sockets[0].getsockname()[1])
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self.seen.tasks):
            task.cancel()
        await asyncio.gather(*self.seen.tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.seen.tasks.add(task)
        self.seen.connections += 1
        conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=False,
                                                                             validate_inbound_headers=False))
        conn.initiate_connection()
        if self.behaviour == "closed-window":
            # Streams get no window at all, and no WINDOW_UPDATE ever comes.
            conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
        writer.write(conn.data_to_send())
        pushers: list[asyncio.Task[None]] = []
        try:
            while True:
                if not self.reading:
                    await asyncio.sleep(3600)
                data = await reader.read(65536)
                if not data:
                    break
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        self.seen.streams += 1
                        pushers.append(asyncio.create_task(self._answer(conn, writer, event.stream_id or 0)))
                    elif isinstance(event, h2.events.StreamReset):
                        self.seen.resets += 1
                    elif isinstance(event, h2.events.DataReceived):
                        conn.acknowledge_received_data(event.flow_controlled_length or 0, event.stream_id or 0)
                writer.write(conn.data_to_send())
                await writer.drain()
        except (ConnectionError, h2.exceptions.ProtocolError):
            pass
        finally:
            self.seen.closed += 1
            for pusher in pushers:
                pusher.cancel()
            writer.close()
            self.seen.tasks.discard(task)

    async def _answer(self, conn: h2.connection.H2Connection, writer: asyncio.StreamWriter, stream_id: int) -> None:
        with contextlib.suppress(ConnectionError, h2.exceptions.ProtocolError, asyncio.CancelledError):
            if self.behaviour == "huge-headers":
                conn.send_headers(stream_id, [(":status", "200"), ("content-type", "application/grpc")]
                                  + [(f"x-big-{i}", "v" * 400) for i in range(100)])
                writer.write(conn.data_to_send())
            elif self.behaviour == "continuation-flood":
                head = HeadersFrame(stream_id)
                head.data = conn.encoder.encode([(":status", "200")])
                writer.write(head.serialize())
                for _ in range(10_000):
                    frame = ContinuationFrame(stream_id)
                    frame.data = b"\x00" * 16_000
                    writer.write(frame.serialize())
                    await writer.drain()
            elif self.behaviour == "endless-stream":
                conn.send_headers(stream_id, [(":status", "200"), ("content-type", "application/grpc")])
                writer.write(conn.data_to_send())
                chunk = b"\x00\x00\x00\x03\xe8" + b"x" * 1000  # one 1000-byte gRPC message
                while True:
                    window = min(conn.local_flow_control_window(stream_id), conn.max_outbound_frame_size)
                    if window >= len(chunk):
                        conn.send_data(stream_id, chunk)
                        self.seen.pushed += len(chunk)
                        writer.write(conn.data_to_send())
                        await writer.drain()
                    else:
                        await asyncio.sleep(0.005)
            elif self.behaviour == "ping-flood":
                self.reading = False
                ping = PingFrame(0)
                ping.opaque_data = b"12345678"
                burst = ping.serialize() * 4096
                for _ in range(200):  # at most ~14 MB of PINGs
                    writer.write(burst)
                    await writer.drain()
                    self.seen.pushed += len(burst)
            elif self.behaviour == "plain-503":
                conn.send_headers(stream_id, [(":status", "503"), ("content-type", "text/plain")])
                conn.send_data(stream_id, b"upstream busy", end_stream=True)
                writer.write(conn.data_to_send())
            # closed-window and silent: never answer.
            await asyncio.sleep(3600)


@pytest.fixture
async def hostile() -> AsyncIterator[Callable[[str], Awaitable[HostileH2]]]:
    """`await hostile(behaviour)`: a started hostile upstream, stopped after the test."""
    started: list[HostileH2] = []

    async def make(behaviour: str) -> HostileH2:
        server = await HostileH2(behaviour).start()
        started.append(server)
        return server

    yield make
    for server in started:
        await server.stop()
