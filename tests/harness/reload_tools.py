"""Tools for the reload and outage fault tests (tests/faults/test_reload_*,
test_outages_*): resource manifests as text, a bounded request load that counts
lost, failed and slow requests, and a backend in its own process that can be
killed with SIGKILL."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from .controlplane import free_port
from .waiting import poll

API = "gateway.vocelio.ai/v1alpha1"


def service_yaml(name: str, port: int, *, rewrite: str = "/", prefix: str | None = None, extra: str = "") -> str:
    """A VocelioService with one static loopback endpoint and fast health checks."""
    return f"""apiVersion: {API}
kind: VocelioService
metadata:
  name: {name}
spec:
  pathPrefix: {prefix or f"/api/v1/{name}"}
  rewrite: {rewrite}
  healthCheck: {{intervalSeconds: 0.5, timeoutSeconds: 0.5}}
  backends:
    - staticEndpoints: [{{address: 127.0.0.1, port: {port}}}]
{extra}"""


def write_atomic(path: Path, data: bytes) -> None:
    """Write through a temporary file and rename (what kubelet and careful editors do)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@dataclass
class LoadStats:
    """Outcome counts of a request load: `lost` got no answer at all (connection error,
    timeout), `failed` got a 5xx, `unexpected` any other status not in `ok_statuses`,
    `slow` took longer than the slow threshold (whatever the answer)."""

    sent: int = 0
    ok: int = 0
    lost: int = 0
    failed: int = 0
    unexpected: int = 0
    slow: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    max_latency_s: float = 0.0
    max_requests: int = 0

    @property
    def capped(self) -> bool:
        """True when the load stopped at its request bound rather than with the scenario."""
        return self.sent >= self.max_requests

    def line(self) -> str:
        return (f"sent={self.sent} ok={self.ok} lost={self.lost} failed={self.failed} "
                f"unexpected={self.unexpected} slow={self.slow} max_latency={self.max_latency_s:.3f}s "
                f"statuses={dict(self.statuses)} errors={dict(self.errors)}")


async def run_load(base_url: str, paths: list[str], *, stop: asyncio.Event, workers: int = 4,
                   max_requests: int = 200_000, slow_s: float = 1.0, timeout_s: float = 5.0,
                   ok_statuses: tuple[int, ...] = (200,),
                   check: Callable[[str, int, bytes], None] | None = None) -> LoadStats:
    """`workers` clients each sending GETs in turn over `paths` (keep-alive) until `stop` is
    set or `max_requests` were sent in all: a bounded loop. `check(path, status, body)` may
    assert on each answer."""
    stats = LoadStats(max_requests=max_requests)
    timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def worker(offset: int) -> None:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            i = offset
            while not stop.is_set() and stats.sent < max_requests:
                path = paths[i % len(paths)]
                i += 1
                stats.sent += 1
                started = time.monotonic()
                try:
                    async with session.get(base_url + path) as resp:
                        body = await resp.read()
                        status = resp.status
                except (TimeoutError, aiohttp.ClientError) as exc:
                    stats.lost += 1
                    stats.errors[type(exc).__name__] += 1
                    continue
                finally:
                    elapsed = time.monotonic() - started
                    stats.max_latency_s = max(stats.max_latency_s, elapsed)
                    if elapsed > slow_s:
                        stats.slow += 1
                stats.statuses[status] += 1
                if status in ok_statuses:
                    stats.ok += 1
                elif status >= 500:
                    stats.failed += 1
                else:
                    stats.unexpected += 1
                if check is not None:
                    check(path, status, body)

    await asyncio.gather(*(worker(k) for k in range(workers)))
    return stats


async def while_loaded(base_url: str, paths: list[str], scenario: Callable[[], Awaitable[None]],
                       **kw: object) -> LoadStats:
    """Run `scenario` while a load runs; the load stops when the scenario returns."""
    stop = asyncio.Event()
    load = asyncio.create_task(run_load(base_url, paths, stop=stop, **kw))  # type: ignore[arg-type]
    try:
        await scenario()
    finally:
        stop.set()
    return await load


_BACKEND = """
import sys
from aiohttp import web
name, port = sys.argv[1], int(sys.argv[2])
async def health(request):
    return web.Response(text="ok")
async def echo(request):
    await request.read()
    return web.json_response({"upstream": name, "path": request.path_qs})
app = web.Application()
app.router.add_get("/health", health)
app.router.add_route("*", "/{tail:.*}", echo)
web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)
"""


class BackendProcess:
    """An echo backend in its own process (answers `{"upstream": name, "path": ...}`), so a
    test can kill it the way a node failure does: SIGKILL, no goodbye."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> BackendProcess:
        self.proc = subprocess.Popen([sys.executable, "-c", _BACKEND, self.name, str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def up() -> bool:
            import socket

            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True

        poll(f"backend {self.name} listening", up, 20)
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=5)
