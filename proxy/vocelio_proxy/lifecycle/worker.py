"""The worker side of a multi-worker pod (`workers` > 1): a worker is an ordinary
`vocelio-proxy serve` process started by the supervisor (`lifecycle.supervisor`)
with the hidden `--as-worker INDEX:FD:PARENT` flag. Called by the CLI, this
module makes the worker die with its supervisor (PR_SET_PDEATHSIG delivers
SIGTERM, so an orphaned worker drains instead of serving on alone) and writes
one JSON line on the inherited pipe `FD`: `{"event": "ready", ...}` once its
listeners are up, or `{"event": "error", "message", "status"}` for a start
failure, which the supervisor prints once instead of every worker printing it."""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import sys
from dataclasses import dataclass
from typing import IO

from vocelio_proxy.lifecycle.app import RunningGateway

_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True, slots=True)
class WorkerRole:
    """Who this worker is: its index in the pod, the pipe to its supervisor and the supervisor's pid."""

    index: int
    channel_fd: int
    parent: int

    @classmethod
    def parse(cls, text: str) -> WorkerRole:
        try:
            index, fd, parent = (int(part) for part in text.split(":"))
        except ValueError:
            raise ValueError(f"--as-worker: {text!r} is not INDEX:FD:PARENT") from None
        return cls(index, fd, parent)


class WorkerChannel:
    """The pipe to the supervisor: one JSON line per event."""

    def __init__(self, role: WorkerRole) -> None:
        self.role = role
        self._out: IO[str] | None = os.fdopen(role.channel_fd, "w", encoding="utf-8")
        self._ready = False

    def _send(self, message: dict[str, object]) -> None:
        if self._out is None:
            return
        try:
            self._out.write(json.dumps(message) + "\n")
            self._out.flush()
        except OSError:  # the supervisor is gone; PDEATHSIG is on its way
            self._out = None

    def ready(self, gateway: RunningGateway) -> None:
        self._send({"event": "ready", "pid": os.getpid(), "port": gateway.port, "admin_port": gateway.admin_port})
        self._ready = True

    def failed(self, message: str, status: int) -> bool:
        """Hand a start failure to the supervisor (True); after the start the worker prints it itself."""
        if self._ready or self._out is None:
            return False
        self._send({"event": "error", "message": message, "status": status})
        return self._out is not None


class _WorkerField(logging.Filter):
    """Adds `worker: <index>` to every process log line, so the pod's interleaved logs say who wrote each."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def filter(self, record: logging.LogRecord) -> bool:
        fields = getattr(record, "fields", None)
        record.fields = {**fields, "worker": self.index} if isinstance(fields, dict) else {"worker": self.index}
        return True


def label_logs(role: WorkerRole) -> None:
    """Mark this worker's process logs with its index (after `setup_logging` installed the handler)."""
    for handler in logging.getLogger().handlers:
        handler.addFilter(_WorkerField(role.index))


def die_with_parent(role: WorkerRole) -> None:
    """Ask the kernel for SIGTERM when the supervisor dies (Linux), and exit at once if it
    already has (the request is only as good as the moment it is made)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != role.parent:
        raise SystemExit(1)
