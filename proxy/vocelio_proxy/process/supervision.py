"""Supervised background loops: a loop that should run for the life of the
process (the config watcher, the Kubernetes API watch) runs under `supervise`,
which catches a crash, logs it with its traceback at ERROR (once per distinct
error, so a crash loop does not flood the log), counts it, shows it in a
`WatcherStatus` (read by `/status` and the metrics collector) and restarts the
loop after an exponential backoff. Nothing here stops a loop except
cancellation, which is how the application's cleanup context ends its tasks.
Used by `sources.watch_source` and `kube_source.KubeConfigMapSource.run`."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("vocelio.proxy.config")

#: First restart delay after a crash, doubled per consecutive crash up to the maximum.
BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 30.0
#: A loop that ran this long before crashing starts again from the minimum delay.
STABLE_AFTER_S = 60.0


@dataclass
class WatcherStatus:
    """What `/status` shows for one supervised loop."""

    name: str
    state: str = "starting"  # starting | running | restarting | stopped
    restarts: int = 0
    last_error: str = ""
    last_error_at: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"state": self.state, "restarts": self.restarts, "last_error": self.last_error or None,
                "last_error_at": self.last_error_at or None}


def describe_error(exc: BaseException) -> str:
    """One line: the type and message of an exception, bounded in length."""
    text = " ".join(str(exc).split())
    line = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return line[:500]


async def supervise(status: WatcherStatus, body: Callable[[], Awaitable[None]], *,
                    wall: Callable[[], float] = time.time, backoff_min_s: float = BACKOFF_MIN_S,
                    backoff_max_s: float = BACKOFF_MAX_S, stable_after_s: float = STABLE_AFTER_S) -> None:
    """Run `body` until cancelled, restarting it whenever it raises or returns."""
    loop = asyncio.get_running_loop()
    delay = backoff_min_s
    logged: tuple[type[BaseException], str] | None = None
    while True:
        status.state = "running"
        started = loop.time()
        error: Exception
        try:
            await body()
            error = RuntimeError(f"{status.name} stopped without being cancelled")
        except asyncio.CancelledError:
            status.state = "stopped"
            raise
        except Exception as exc:  # the point of a supervisor: any crash is restarted
            error = exc
        if loop.time() - started >= stable_after_s:
            delay = backoff_min_s
        status.restarts += 1
        status.last_error = describe_error(error)
        status.last_error_at = wall()
        status.state = "restarting"
        signature = (type(error), str(error))
        fields = {"watcher": status.name, "error": status.last_error, "restarts": status.restarts,
                  "retry_in_s": delay}
        if signature != logged:
            logged = signature
            log.error("background loop crashed; restarting it", exc_info=error, extra={"fields": fields})
        else:
            log.warning("background loop crashed again; restarting it", extra={"fields": fields})
        await asyncio.sleep(delay)
        delay = min(delay * 2, backoff_max_s)
