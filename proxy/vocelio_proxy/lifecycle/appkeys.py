"""Typed keys for everything the proxy application carries: settings, state
and clients travel here, never in globals. Read only by the composition root
(`lifecycle`), which hands each part of the pipeline what it uses (and by tests
that inspect a running app). Per-request facts live on the `Exchange`."""

from __future__ import annotations

from aiohttp import web

from vocelio_proxy.clock import Clock
from vocelio_proxy.pipeline.edge import EdgeGate, EdgePolicy
from vocelio_proxy.process.accesslog import AccessLog
from vocelio_proxy.process.metrics import ProxyMetrics
from vocelio_proxy.process.state import GatewayState
from vocelio_proxy.process.tracing import SpanExporter
from vocelio_proxy.settings import ProxySettings
from vocelio_proxy.wire.h2c_upstream import H2cPool
from vocelio_proxy.wire.upstream import UpstreamPool

SETTINGS = web.AppKey("settings", ProxySettings)
CLOCK = web.AppKey("clock", Clock)
STATE = web.AppKey("state", GatewayState)
POOL = web.AppKey("pool", UpstreamPool)
METRICS = web.AppKey("metrics", ProxyMetrics)
ACCESS_LOG = web.AppKey("access_log", AccessLog)
#: Present only when span export is on (`tracing.exporter`).
SPANS = web.AppKey("spans", SpanExporter)
EDGE_POLICY: web.AppKey[EdgePolicy] = web.AppKey("edge_policy")
EDGE_GATE = web.AppKey("edge_gate", EdgeGate)
#: The h2c (HTTP/2 cleartext) client pool for services with `upstream_protocol: h2c`.
H2C_POOL = web.AppKey("h2c_pool", H2cPool)
