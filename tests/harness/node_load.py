"""Steady load for the real-node tests: one thread sends requests at a fixed
pace (a new connection each, so every request goes through kube-proxy's
Service routing afresh) and records every answer and every failure, so a
rolling upgrade or a pod deletion can be judged request by request. Owned by
the test that starts it; `stop()` joins the thread."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field


def get(host: str, port: int, path: str, timeout: float = 5,
        headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close", **(headers or {})})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def backend_pod(body: bytes) -> str:
    """The backend pod that served a request (tests/node/backend answers with it)."""
    return str(json.loads(body).get("pod", ""))


@dataclass
class SteadyLoad:
    host: str
    port: int
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    interval_s: float = 0.02
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    pods: Counter[str] = field(default_factory=Counter)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> SteadyLoad:
        self._thread = threading.Thread(target=self._run, name="steady-load", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                status, body = get(self.host, self.port, self.path, headers=self.headers)
            except OSError as exc:
                self.failures.append(f"{time.strftime('%H:%M:%S')} {type(exc).__name__}: {exc}")
            else:
                if status == 200:
                    self.ok += 1
                    self.pods[backend_pod(body)] += 1
                else:
                    self.failures.append(f"{time.strftime('%H:%M:%S')} HTTP {status}: {body[:200]!r}")
            self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - started)))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
