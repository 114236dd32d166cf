"""The buffered access log: one line per request (JSON, or text with
`log_format: text`; the request pipeline, `handling`, builds it), collected in memory and
written in batches (every 250 ms or 256 lines, and on shutdown), the way
nginx's `access_log ... buffer=` does, because a write and flush per request
costs the proxy a third of its throughput. Owned by the application (whose cleanup
context runs `flush_forever`); written to by the request pipeline (`handling`) once per
request, so it is compiled with the hot path (mypyc: no async generator here)."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import IO, Any

_MAX_LINES = 256
_FLUSH_S = 0.25


class AccessLog:
    def __init__(self, sink: IO[bytes] | None = None) -> None:
        self._sink = sink
        self._lines: list[str] = []

    def write(self, entry: dict[str, Any]) -> None:
        self.write_line(json.dumps(entry))

    def write_line(self, line: str) -> None:
        """One already-built line (no newline)."""
        self._lines.append(line)
        if len(self._lines) >= _MAX_LINES:
            self.flush()

    def flush(self) -> None:
        if not self._lines:
            return
        data = ("\n".join(self._lines) + "\n").encode()
        self._lines.clear()
        sink = self._sink or sys.stdout.buffer
        try:
            sink.write(data)
            sink.flush()
        except (OSError, ValueError):
            pass  # a closed stdout must not take the proxy down

    async def flush_forever(self) -> None:
        """Flushes every 250 ms until cancelled (owned by `lifecycle.app`'s cleanup
        context, which flushes once more at shutdown)."""
        while True:
            await asyncio.sleep(_FLUSH_S)
            self.flush()
