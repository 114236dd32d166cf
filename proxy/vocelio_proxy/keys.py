"""Typed keys for everything the proxy application and its requests carry:
settings, state, clients and per-request facts travel here, never in globals."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web

from .accesslog import AccessLog
from .clock import Clock
from .metrics import ProxyMetrics
from .routing import RouteMatch
from .settings import ProxySettings
from .state import GatewayState
from .upstream import UpstreamPool

#: An edge policy (auth + rate limiting) run before forwarding. It returns a
#: response to send instead, or the identity headers to add upstream.
EdgePolicy = Callable[[web.Request, RouteMatch], Awaitable[web.StreamResponse | dict[str, str]]]

SETTINGS = web.AppKey("settings", ProxySettings)
CLOCK = web.AppKey("clock", Clock)
STATE = web.AppKey("state", GatewayState)
POOL = web.AppKey("pool", UpstreamPool)
METRICS = web.AppKey("metrics", ProxyMetrics)
ACCESS_LOG = web.AppKey("access_log", AccessLog)
WS_SESSION = web.AppKey("ws_session", aiohttp.ClientSession)
EDGE_POLICY: web.AppKey[EdgePolicy] = web.AppKey("edge_policy")
EDGE_GATE: web.AppKey[object] = web.AppKey("edge_gate")

# Per-request values.
REQUEST_ID = web.RequestKey("request_id", str)
CLIENT_IP = web.RequestKey("client_ip", str)
SERVICE_LABEL = web.RequestKey("service", str)
UPSTREAM = web.RequestKey("upstream", str)
ATTEMPTS = web.RequestKey("attempts", int)
RESPONSE_EXTRA_HEADERS = web.RequestKey("extra_headers", dict)
CORS_HEADERS = web.RequestKey("cors_headers", dict)
