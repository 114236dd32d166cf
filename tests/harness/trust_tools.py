"""Helpers for the trust-boundary tests (tests/adversarial/test_trust_*.py):
exact request bytes with chosen header spellings, parsing a raw answer's
headers and envelope, and a gateway started with its admin listener (the
shared `gateway_factory` exposes only the public port)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from vocelio_contract.config import GatewayConfig
from vocelio_proxy.clock import Clock
from vocelio_proxy.lifecycle import appkeys as keys
from vocelio_proxy.lifecycle.app import RunningGateway, create_app, start_gateway
from vocelio_proxy.lifecycle.sources import StaticSource
from vocelio_proxy.settings import ProxySettings

from .app_fixtures import poll


def request_bytes(path: str, headers: list[tuple[str, str | bytes]] | None = None, method: str = "GET",
                  host: str | bytes = "gw.test", close: bool = True) -> bytes:
    """One HTTP/1.1 request head, headers written exactly as given (str as Latin-1)."""
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: " + (host.encode("latin-1") if isinstance(host, str)
                                                                 else host)]
    for name, value in headers or []:
        lines.append(name.encode("latin-1") + b": " + (value.encode("latin-1") if isinstance(value, str) else value))
    if close:
        lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n"


def head_of(answer: bytes) -> dict[str, list[str]]:
    """The first response's headers by lower-case name."""
    head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")[1:]
    out: dict[str, list[str]] = {}
    for line in head:
        name, _, value = line.partition(":")
        out.setdefault(name.strip().lower(), []).append(value.strip())
    return out


def envelope_of(answer: bytes) -> dict[str, Any]:
    """The JSON error envelope of the first response (its body, Content-Length framed)."""
    rest = answer.partition(b"\r\n\r\n")[2]
    length = int(head_of(answer)["content-length"][0])
    body: dict[str, Any] = json.loads(rest[:length])
    return body


@asynccontextmanager
async def running_gateway(config: GatewayConfig, clock: Clock | None = None,
                          **settings: Any) -> AsyncIterator[RunningGateway]:
    """A gateway on 127.0.0.1 (any free port, and the admin listener when `admin` says),
    ready to serve, stopped on exit."""
    settings.setdefault("access_log", False)
    app = create_app(ProxySettings(port=0, **settings), StaticSource(config.seal()), clock=clock)
    gateway = await start_gateway(app, "127.0.0.1", 0)
    try:
        await poll(lambda: app[keys.STATE].runtime is not None and app[keys.STATE].health_round_done,
                   "gateway ready")
        yield gateway
    finally:
        await gateway.stop(2.0)
