"""Span export, off by default (`tracing.exporter: otlp-http`): one SERVER span
per proxied request, sent in batches to an OpenTelemetry collector (or Jaeger,
Tempo) with OTLP/HTTP in its JSON encoding, so the gateway appears in traces and
the span id it forwards upstream names a span the collector receives.

The request pipeline calls `begin` (through the proxy handler, once per proxied
request) and `end` (when the request is recorded); both only touch memory. A
background task owned by the application (`run`, a cleanup context) sends the
queue every `export_interval_s` and once more at shutdown. The queue is bounded
(`max_queue`): when the collector is slow or down, new spans are dropped and
counted (`vocelio_trace_spans_total{result="dropped"}`), never buffered without
bound; a failed export is counted (`result="failed"`) and logged at most once a
minute."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from vocelio_proxy import __version__
from vocelio_proxy.policy.tracecontext import begin_span
from vocelio_proxy.process.metrics import ProxyMetrics
from vocelio_proxy.settings import TracingSettings
from vocelio_proxy.wire.exchange import Exchange

log = logging.getLogger("vocelio.tracing")
_SERVER = 2  # OTLP SpanKind SERVER
_ERROR = 2  # OTLP StatusCode ERROR
_LOG_EVERY_S = 60.0


def _attr(key: str, value: str | int) -> dict[str, Any]:
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    return {"key": key, "value": {"stringValue": value}}


class SpanExporter:
    def __init__(self, settings: TracingSettings, metrics: ProxyMetrics) -> None:
        self._settings = settings
        self._metrics = metrics
        self._queue: list[dict[str, Any]] = []
        self._ratio = settings.sample_ratio
        self._random = random.random
        self._last_failure_log = 0.0
        self._resource = {"attributes": [_attr("service.name", settings.service_name)]}

    def begin(self, traceparent: str | None, tracestate: str | None) -> tuple[str, str | None, str | None]:
        """(`traceparent`, `tracestate`) to forward and the parent id of the gateway's span
        ("" for a root span), or None when this request records no span."""
        return begin_span(traceparent, tracestate, self._ratio >= 1.0 or self._random() < self._ratio)

    def end(self, ex: Exchange, parent_id: str, status: int, elapsed_s: float) -> None:
        """Queue the span of a finished request (its ids are in `ex.traceparent`)."""
        if len(self._queue) >= self._settings.max_queue:
            self._metrics.spans.labels("dropped").inc()
            return
        sent = ex.traceparent or ""
        end_ns = time.time_ns()
        span: dict[str, Any] = {
            "traceId": sent[3:35], "spanId": sent[36:52], "name": f"{ex.method} {ex.service_label}",
            "kind": _SERVER, "startTimeUnixNano": str(end_ns - int(elapsed_s * 1e9)),
            "endTimeUnixNano": str(end_ns),
            "attributes": [
                _attr("http.request.method", ex.method), _attr("url.path", ex.path[:1024]),
                _attr("http.response.status_code", status), _attr("vocelio.service", ex.service_label),
                _attr("vocelio.request_id", ex.request_id), _attr("client.address", ex.client_ip),
                _attr("vocelio.attempts", ex.attempts),
            ],
        }
        if parent_id:
            span["parentSpanId"] = parent_id
        if ex.tracestate:
            span["traceState"] = ex.tracestate
        if ex.upstream:
            span["attributes"].append(_attr("vocelio.upstream", ex.upstream))
        if status >= 500:
            span["status"] = {"code": _ERROR}
        self._queue.append(span)

    async def run(self) -> AsyncIterator[None]:
        """A cleanup-context body: exports periodically until shutdown, then once more."""
        timeout = aiohttp.ClientTimeout(total=self._settings.timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            task = asyncio.create_task(self._export_forever(session), name="span-export")
            yield
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await self.export(session)

    async def _export_forever(self, session: aiohttp.ClientSession) -> None:
        while True:
            await asyncio.sleep(self._settings.export_interval_s)
            await self.export(session)

    async def export(self, session: aiohttp.ClientSession) -> None:
        """Send what is queued as one OTLP/HTTP JSON request."""
        if not self._queue:
            return
        spans, self._queue = self._queue, []
        body = json.dumps({"resourceSpans": [{"resource": self._resource, "scopeSpans": [{
            "scope": {"name": "vocelio_proxy", "version": __version__}, "spans": spans}]}]})
        try:
            async with session.post(self._settings.endpoint, data=body,
                                    headers={"Content-Type": "application/json"}) as answer:
                await answer.read()
                ok = answer.status < 300
                problem = f"HTTP {answer.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            ok, problem = False, f"{type(exc).__name__}: {exc}"
        self._metrics.spans.labels("exported" if ok else "failed").inc(len(spans))
        now = time.monotonic()
        if not ok and now - self._last_failure_log >= _LOG_EVERY_S:
            self._last_failure_log = now
            log.warning("span export failed", extra={"fields": {
                "endpoint": self._settings.endpoint, "error": problem, "spans": len(spans)}})
