"""Typed keys for everything the proxy application and its requests carry:
settings, state, clients and per-request facts travel here, never in globals."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from .clock import Clock
from .settings import ProxySettings

if TYPE_CHECKING:
    from .metrics import ProxyMetrics
    from .routing import RouteMatch
    from .state import GatewayState
    from .upstream import UpstreamPool

#: An edge policy (auth + rate limiting) run before forwarding. It returns a
#: response to send instead, or the identity headers to add upstream.
EdgePolicy = Callable[[web.Request, "RouteMatch"], Awaitable["web.StreamResponse | dict[str, str]"]]

SETTINGS = web.AppKey("settings", ProxySettings)
CLOCK = web.AppKey("clock", Clock)
STATE = web.AppKey("state", "GatewayState")
POOL = web.AppKey("pool", "UpstreamPool")
METRICS = web.AppKey("metrics", "ProxyMetrics")
WS_SESSION = web.AppKey("ws_session", aiohttp.ClientSession)
EDGE_POLICY = web.AppKey("edge_policy", EdgePolicy)

# Per-request values (plain string keys: aiohttp's RequestKey arrives in 3.x later).
REQUEST_ID = "vocelio.request_id"
CLIENT_IP = "vocelio.client_ip"
SERVICE_LABEL = "vocelio.service"
UPSTREAM = "vocelio.upstream"
ATTEMPTS = "vocelio.attempts"
RESPONSE_EXTRA_HEADERS = "vocelio.extra_headers"
