"""A real `grpcio` server on 127.0.0.1 for gRPC tests, with generic handlers over
raw bytes (no protoc codegen): service `test.Echo` with one method per RPC kind,
and a record of what it saw (metadata, cancellations, finished calls) so tests can
assert that a cancel reached the backend.

Methods (request/response messages are raw bytes):
* `Unary`: echoes the request; a request starting with `fail:` ends with
  INVALID_ARGUMENT and the rest as the message; `sleep:<s>` sleeps first
  (before the response head);
  always sends trailing metadata `x-trailer: done` and initial metadata
  `x-initial: yes`.
* `ServerStream`: the request `n:<count>[:<pause_s>]` streams `count` messages
  `msg-<i>`; `forever` streams until cancelled.
* `ClientStream`: joins every request message with `|`.
* `Bidi`: answers every message with `echo:<message>`.

And `grpc.health.v1.Health/Check` (the gRPC health checking protocol), SERVING
while `serving` is true.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc

SERVICE = "test.Echo"


def _ident(data: bytes) -> bytes:
    return data


@dataclass
class Record:
    """What the backend saw; guarded by `lock`."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    cancelled: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)
    metadata: list[dict[str, str]] = field(default_factory=list)
    #: The deadline each call arrived with (seconds left; None without one).
    deadlines: list[float | None] = field(default_factory=list)
    active: int = 0

    def note_start(self, context: grpc.ServicerContext, method: str) -> None:
        with self.lock:
            self.active += 1
            self.metadata.append({k: v for k, v in context.invocation_metadata() if isinstance(v, str)})
            self.deadlines.append(context.time_remaining())

        def done() -> None:
            with self.lock:
                self.active -= 1
                (self.cancelled if not context.is_active() and _was_cancelled(context) else self.finished).append(
                    method)
        if not context.add_callback(done):
            # The call ended before its handler ran (a cancel that beat a busy thread pool):
            # grpcio runs no callback added after termination, so count the end here.
            done()


def _was_cancelled(context: grpc.ServicerContext) -> bool:
    code = context.code() if hasattr(context, "code") else None
    return code is None or code == grpc.StatusCode.CANCELLED


class GrpcBackend:
    """A running grpcio server; `port` on 127.0.0.1."""

    def __init__(self, max_workers: int = 32) -> None:
        self.record = Record()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers),
                                  options=[("grpc.so_reuseport", 0)])
        self.server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, {
            "Unary": grpc.unary_unary_rpc_method_handler(self._unary, _ident, _ident),
            "ServerStream": grpc.unary_stream_rpc_method_handler(self._server_stream, _ident, _ident),
            "ClientStream": grpc.stream_unary_rpc_method_handler(self._client_stream, _ident, _ident),
            "Bidi": grpc.stream_stream_rpc_method_handler(self._bidi, _ident, _ident),
        })])
        self.server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("grpc.health.v1.Health", {
            "Check": grpc.unary_unary_rpc_method_handler(self._health, _ident, _ident)})])
        #: What the health service answers: SERVING (b"\x08\x01") or NOT_SERVING (b"\x08\x02").
        self.serving = True
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.stream_cancelled = threading.Event()

    def start(self) -> GrpcBackend:
        self.server.start()
        return self

    def stop(self, grace: float | None = None) -> None:
        self.server.stop(grace).wait(5)

    def _health(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        return b"\x08\x01" if self.serving else b"\x08\x02"

    def _unary(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self.record.note_start(context, "Unary")
        context.set_trailing_metadata((("x-trailer", "done"),))
        if request.startswith(b"sleep:"):
            end = time.monotonic() + float(request[6:])
            while context.is_active() and time.monotonic() < end:
                time.sleep(0.01)
        # After the sleep: the response head comes when the answer is ready.
        context.send_initial_metadata((("x-initial", "yes"),))
        if request.startswith(b"fail:"):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, request[5:].decode())
        return request

    def _server_stream(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        self.record.note_start(context, "ServerStream")
        context.set_trailing_metadata((("x-trailer", "streamed"),))
        if request == b"forever":
            i = 0
            try:
                while context.is_active():
                    yield b"tick-%d" % i
                    i += 1
                    time.sleep(0.01)
            finally:
                # grpc closes the generator of a cancelled call: code after the loop never runs.
                self.stream_cancelled.set()
            return
        parts = request.decode().split(":")
        count = int(parts[1])
        pause = float(parts[2]) if len(parts) > 2 else 0.0
        for i in range(count):
            if pause:
                time.sleep(pause)
            yield b"msg-%d" % i

    def _client_stream(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        self.record.note_start(context, "ClientStream")
        return b"|".join(requests)

    def _bidi(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        self.record.note_start(context, "Bidi")
        for message in requests:
            yield b"echo:" + message


def method(channel: grpc.Channel, kind: str, name: str) -> Any:
    """A callable for `/test.Echo/<name>` of `kind` (unary_unary, unary_stream, ...)."""
    factory = getattr(channel, kind)
    return factory(f"/{SERVICE}/{name}", request_serializer=_ident, response_deserializer=_ident)


class BackendProcess:
    """A `GrpcBackend` in a child process, so a test can kill it mid-stream (SIGKILL:
    no GOAWAY, no trailers, the connection just ends)."""

    def __init__(self) -> None:
        import subprocess
        import sys
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.harness.grpc_backend"],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # the child prints its port once it serves
        if not line.strip().isdigit():
            self.proc.kill()
            raise RuntimeError(f"grpc backend did not start: {line!r}")
        self.port = int(line)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(5)


def main() -> None:
    backend = GrpcBackend().start()
    print(backend.port, flush=True)
    backend.server.wait_for_termination()


if __name__ == "__main__":
    main()
