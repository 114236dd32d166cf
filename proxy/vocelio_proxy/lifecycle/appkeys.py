"""Typed keys for everything the proxy application carries: settings, state
and clients travel here, never in globals. Per-request facts live on the
`Exchange`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from vocelio_proxy.clock import Clock
from vocelio_proxy.policy.error_envelope import Refusal
from vocelio_proxy.policy.routing import RouteMatch
from vocelio_proxy.process.accesslog import AccessLog
from vocelio_proxy.process.metrics import ProxyMetrics
from vocelio_proxy.process.state import GatewayState
from vocelio_proxy.settings import ProxySettings
from vocelio_proxy.wire.exchange import Exchange
from vocelio_proxy.wire.upstream import UpstreamPool

#: An edge policy (auth + rate limiting) run before forwarding. It returns a
#: refusal to answer instead, or the identity headers to add upstream.
EdgePolicy = Callable[[Exchange, RouteMatch], Awaitable[Refusal | dict[str, str]]]

SETTINGS = web.AppKey("settings", ProxySettings)
CLOCK = web.AppKey("clock", Clock)
STATE = web.AppKey("state", GatewayState)
POOL = web.AppKey("pool", UpstreamPool)
METRICS = web.AppKey("metrics", ProxyMetrics)
ACCESS_LOG = web.AppKey("access_log", AccessLog)
EDGE_POLICY: web.AppKey[EdgePolicy] = web.AppKey("edge_policy")
EDGE_GATE: web.AppKey[object] = web.AppKey("edge_gate")
