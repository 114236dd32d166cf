"""A message body in transit between a producer (bytes from a socket) and a
consumer (the code that forwards them), without I/O: the buffered chunks, the
watermarks that tell the producer to pause and resume, the total received
against a byte budget, the end, and the error that ends it early.

The I/O shells add the waiting: `server.RequestBody` extends it (compiled with
it, docs/performance.md), the upstream client's response bodies and HTTP/2's
`StreamBody` hold one (a Python class cannot extend a compiled one).
"""

from __future__ import annotations

import collections

from vocelio_proxy.wire.http1.limits import BODY_HIGH_WATER, BODY_LOW_WATER


class BodyBuffer:
    """Chunks in arrival order with back-pressure decisions.

    `push` answers whether the producer should pause (more than `high` bytes
    buffered); `pop` answers the next chunk and whether the producer may resume
    (fewer than `low` bytes left). `received` counts every byte pushed, so a
    budget (`limit`) is checked as bytes arrive, not when they are read."""

    __slots__ = ("_chunks", "_high", "_low", "done", "error", "limit", "received", "size")

    def __init__(self, high: int = BODY_HIGH_WATER, low: int = BODY_LOW_WATER, limit: int | None = None) -> None:
        self._chunks: collections.deque[bytes] = collections.deque()
        self._high = high
        self._low = low
        #: Bytes buffered now.
        self.size = 0
        #: Bytes pushed in total.
        self.received = 0
        #: At most this many bytes in total (None: no budget).
        self.limit = limit
        #: The producer delivered the whole body.
        self.done = False
        #: Why the body cannot be completed; raised to the consumer after the buffered chunks.
        self.error: BaseException | None = None

    @property
    def complete(self) -> bool:
        return self.done

    @property
    def over_budget(self) -> bool:
        return self.limit is not None and self.received > self.limit

    def push(self, data: bytes) -> bool:
        """Buffer `data`; True when the producer should pause."""
        self._chunks.append(data)
        self.size += len(data)
        self.received += len(data)
        return self.size > self._high

    def pop(self) -> tuple[bytes | None, bool]:
        """(the next chunk or None, whether the producer may resume)."""
        if not self._chunks:
            return None, False
        chunk = self._chunks.popleft()
        self.size -= len(chunk)
        return chunk, self.size < self._low

    def take_all(self) -> bytes:
        """Everything buffered, as one bytes object."""
        data = b"".join(self._chunks)
        self._chunks.clear()
        self.size = 0
        return data

    def clear(self) -> None:
        self._chunks.clear()
        self.size = 0

    def reset(self) -> None:
        """Ready for the next message (a reused connection)."""
        self._chunks.clear()
        self.size = 0
        self.received = 0
        self.done = False
        self.error = None

    def finish(self) -> None:
        self.done = True

    def fail(self, error: BaseException) -> None:
        """End the body early; the first error wins."""
        if self.error is None and not self.done:
            self.error = error

    @property
    def failed(self) -> bool:
        return self.error is not None
