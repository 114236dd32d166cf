"""Prometheus metrics of the proxy: one registry per application (no globals).
Names and labels are a contract for the HPA, dashboards and alerts; every
metric and label, and the bound on each label's values, is documented in
docs/operations/observability.md. Per-request series are incremented by the
proxy handler (`handling`); state gauges (breakers, endpoints) are read at
scrape time by a collector.

The `code` label of `vocelio_requests_total` is bounded: the exact status for
the codes registered with IANA (Python's `http.HTTPStatus`) and nginx's 499,
and the status class (`2xx`...`5xx`) for any other status; `code_class` is
derived from it when scraped, so the hot path increments one series."""

from __future__ import annotations

import bisect
from collections.abc import Callable, Collection, Iterator
from http import HTTPStatus

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from vocelio_contract.buildinfo import build_labels
from vocelio_proxy import COMPILED
from vocelio_proxy.process.routing_state import GatewayRuntime
from vocelio_proxy.process.supervision import WatcherStatus

#: Statuses written as themselves in the `code` label; any other is its class.
KNOWN_CODES = frozenset(int(s) for s in HTTPStatus) | {499}


def _code_label(status: int) -> str:
    if status in KNOWN_CODES:
        return str(status)
    return f"{status // 100}xx" if 100 <= status < 600 else "5xx"


#: `code` label by status (0-999), computed once: the hot path indexes, never formats.
CODE_LABELS: tuple[str, ...] = tuple(_code_label(s) for s in range(1000))


def code_label(status: int) -> str:
    """The bounded `code` label of a status (see the module doc)."""
    return CODE_LABELS[status] if 0 <= status < 1000 else "5xx"


LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class LoopCounter:
    """A labelled counter for the event-loop thread: plain dict arithmetic, no lock
    and no per-call validation (prometheus_client's cost per inc, times five per
    request, was measurable). Exposed through `_HotPathCollector`."""

    def __init__(self, name: str, documentation: str, labels: list[str]) -> None:
        self.name = name
        self.documentation = documentation
        self.labels = labels
        self.values: dict[tuple[str, ...], float] = {}

    def inc(self, key: tuple[str, ...], amount: float = 1.0) -> None:
        self.values[key] = self.values.get(key, 0.0) + amount


class LoopHistogram:
    """A labelled histogram for the event-loop thread (see LoopCounter)."""

    def __init__(self, name: str, documentation: str, labels: list[str],
                 buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.name = name
        self.documentation = documentation
        self.labels = labels
        self.buckets = buckets
        self.series: dict[tuple[str, ...], list[float]] = {}

    def observe(self, key: tuple[str, ...], value: float) -> None:
        row = self.series.get(key)
        if row is None:
            # per-bucket counts, then sum, then count
            row = self.series[key] = [0.0] * (len(self.buckets) + 2)
        index = bisect.bisect_left(self.buckets, value)  # first bound >= value: Prometheus `le`
        if index < len(self.buckets):
            row[index] += 1
        row[-2] += value
        row[-1] += 1


class ProxyMetrics:
    def __init__(self, runtime: Callable[[], GatewayRuntime | None]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # Keyed (service, method, code); exposed with code_class as well (see _HotPathCollector).
        self.requests = LoopCounter("vocelio_requests",
                                    "Requests answered, by service, method, status code and status class.",
                                    ["service", "method", "code"])
        self.request_bytes = LoopCounter("vocelio_request_bytes",
                                         "Bytes received from clients (request line, headers and body), by service.",
                                         ["service"])
        self.response_bytes = LoopCounter("vocelio_response_bytes",
                                          "Bytes sent to clients (status line, headers and body), by service.",
                                          ["service"])
        self.requests_by_protocol = LoopCounter("vocelio_requests_by_http_version",
                                                "Requests answered, by the HTTP version of the client's request "
                                                "(1.0, 1.1, 2).", ["http_version"])
        self.request_duration = LoopHistogram("vocelio_request_duration_seconds",
                                              "Time from request received to response headers sent.", ["service"])
        self.upstream_duration = LoopHistogram("vocelio_upstream_duration_seconds",
                                               "Time from request sent upstream to response headers.", ["service"])
        self.in_flight_count = 0
        self.retries = Counter("vocelio_upstream_retries", "Retried upstream attempts.", ["service", "reason"],
                               registry=r)
        self.upstream_errors = Counter("vocelio_upstream_errors", "Upstream failures by kind.",
                                       ["service", "kind"], registry=r)
        self.config_reloads = Counter("vocelio_config_reloads", "Config load attempts by result.", ["result"],
                                      registry=r)
        self.config_last_success = Gauge("vocelio_config_last_reload_success_timestamp_seconds",
                                         "Wall time of the last applied config.", registry=r)
        self.ratelimit_decisions = LoopCounter("vocelio_ratelimit_decisions",
                                               "Rate-limit decisions by tier and result.", ["tier", "result"])
        self.ratelimit_backend_errors = Counter("vocelio_ratelimit_backend_errors",
                                                "Rate-limit store (Redis) failures.", registry=r)
        self.ratelimit_fallback = Gauge("vocelio_ratelimit_fallback_active",
                                        "1 while decisions use the in-process fallback limiter.", registry=r)
        self.ratelimit_sync_failing = Gauge(
            "vocelio_ratelimit_sync_failing",
            "1 while lease mode cannot give unspent units back to Redis (they count as used meanwhile).", registry=r)
        self.ratelimit_latency = Histogram("vocelio_ratelimit_store_duration_seconds",
                                           "Latency of one rate-limit store round trip (one batch).",
                                           buckets=LATENCY_BUCKETS, registry=r)
        self.auth_failures = Counter("vocelio_auth_failures", "Rejected authentications by reason.",
                                     ["reason"], registry=r)
        self.tunnels = Counter("vocelio_tunnels", "Upgraded connections (WebSocket) opened, by service.",
                               ["service"], registry=r)
        self.tunnels_open = Gauge("vocelio_tunnels_open", "Upgraded connections open now, by service.",
                                  ["service"], registry=r)
        self.tunnel_idle_closes = Counter("vocelio_tunnel_idle_closes",
                                          "Upgraded connections closed by the tunnel idle timeout.", ["service"],
                                          registry=r)
        self.upgrades_refused = Counter("vocelio_upgrades_refused",
                                        "Upgrade answers refused (an invalid or unexpected 101), by service.",
                                        ["service"], registry=r)
        self.spans = Counter("vocelio_trace_spans",
                             "Spans of the span exporter (tracing.exporter) by result: exported, failed, dropped.",
                             ["result"], registry=r)
        # `compiled`: `pure` or `mypyc-<build>` (vocelio_proxy.compiled), one value per process.
        labels = {**build_labels("proxy"), "compiled": COMPILED.label}
        build = Gauge("vocelio_build_info", "The running build: version, Python, source commit and whether the "
                      "hot path is compiled (always 1).", list(labels), registry=r)
        build.labels(**labels).set(1)
        r.register(_StateCollector(runtime))
        r.register(_HotPathCollector(self))
        self._watchers_tracked = False

    def track_config_watchers(self, watchers: Callable[[], Collection[WatcherStatus]],
                              problems: Callable[[], tuple[int, int]]) -> None:
        """Expose the supervised config loops (restarts, up) and the source's problem counts
        (problems, resources kept at their last good version). Called once by the watcher;
        later calls are ignored."""
        if self._watchers_tracked:
            return
        self._watchers_tracked = True
        self.registry.register(_WatcherCollector(watchers, problems))

    def count_request(self, service: str, method: str, code: str, seconds: float) -> None:
        """One answered request; `code` is `code_label(status)`."""
        self.requests.inc((service, method, code))
        self.request_duration.observe((service,), seconds)

    def count_bytes(self, service: str, received: int, sent: int) -> None:
        key = (service,)
        self.request_bytes.inc(key, received)
        self.response_bytes.inc(key, sent)

    def requests_by_class(self) -> dict[tuple[str, str, str], float]:
        """Requests by (service, method, code_class): the totals of the `code` series."""
        out: dict[tuple[str, str, str], float] = {}
        for (service, method, code), value in self.requests.values.items():
            key = (service, method, code[0] + "xx")
            out[key] = out.get(key, 0.0) + value
        return out

    def observe_upstream(self, service: str, seconds: float) -> None:
        self.upstream_duration.observe((service,), seconds)


class _HotPathCollector(Collector):
    def __init__(self, metrics: ProxyMetrics) -> None:
        self._m = metrics

    def collect(self) -> Iterator[Metric]:
        m = self._m
        requests = CounterMetricFamily(m.requests.name, m.requests.documentation,
                                       labels=["service", "method", "code_class", "code"])
        for (service, method, code), value in sorted(m.requests.values.items()):
            requests.add_metric([service, method, code[0] + "xx", code], value)
        yield requests
        for counter in (m.ratelimit_decisions, m.request_bytes, m.response_bytes, m.requests_by_protocol):
            family = CounterMetricFamily(counter.name, counter.documentation, labels=counter.labels)
            for key, value in sorted(counter.values.items()):
                family.add_metric(list(key), value)
            yield family
        for hist in (m.request_duration, m.upstream_duration):
            hfamily = HistogramMetricFamily(hist.name, hist.documentation, labels=hist.labels)
            for key, row in sorted(hist.series.items()):
                cumulative = 0.0
                buckets = []
                for bound, count in zip(hist.buckets, row, strict=False):
                    cumulative += count
                    buckets.append((repr(float(bound)), cumulative))
                buckets.append(("+Inf", row[-1]))
                hfamily.add_metric(list(key), buckets, row[-2])
            yield hfamily
        gauge = GaugeMetricFamily("vocelio_requests_in_flight", "Requests being served by this process.")
        gauge.add_metric([], m.in_flight_count)
        yield gauge


class _StateCollector(Collector):
    def __init__(self, runtime: Callable[[], GatewayRuntime | None]) -> None:
        self._runtime = runtime

    def collect(self) -> Iterator[Metric]:
        rt = self._runtime()
        breaker = GaugeMetricFamily("vocelio_circuit_breaker_state",
                                    "Breaker state per service: 0 closed, 1 half-open, 2 open.", labels=["service"])
        probes = GaugeMetricFamily("vocelio_circuit_breaker_probes_in_flight",
                                   "Half-open probes holding a slot, per service.", labels=["service"])
        healthy = GaugeMetricFamily("vocelio_endpoints_healthy", "Endpoints eligible for traffic.", labels=["service"])
        total = GaugeMetricFamily("vocelio_endpoints", "Endpoints known from config.", labels=["service"])
        info = InfoMetricFamily("vocelio_config", "The applied config.")
        if rt is not None:
            for sid, svc in sorted(rt.services.items()):
                breaker.add_metric([sid], svc.breaker.state.gauge)
                probes.add_metric([sid], svc.breaker.probes_in_flight)
                h, t = svc.balancer.counts()
                healthy.add_metric([sid], h)
                total.add_metric([sid], t)
            info.add_metric([], {"version": rt.config.version, "hash": rt.config.hash,
                                 "schema_version": str(rt.config.schema_version)})
        yield breaker
        yield probes
        yield healthy
        yield total
        yield info


class _WatcherCollector(Collector):
    def __init__(self, watchers: Callable[[], Collection[WatcherStatus]],
                 problems: Callable[[], tuple[int, int]]) -> None:
        self._watchers = watchers
        self._problems = problems

    def collect(self) -> Iterator[Metric]:
        restarts = CounterMetricFamily("vocelio_config_watcher_restarts",
                                       "Crashes of a supervised config loop, each followed by a restart.",
                                       labels=["watcher"])
        up = GaugeMetricFamily("vocelio_config_watcher_up",
                               "1 while a supervised config loop runs, 0 while it waits to restart or reconnect.",
                               labels=["watcher"])
        for status in sorted(self._watchers(), key=lambda s: s.name):
            restarts.add_metric([status.name], status.restarts)
            up.add_metric([status.name], 1 if status.state == "running" else 0)
        problem_count, kept_count = self._problems()
        problems = GaugeMetricFamily("vocelio_config_source_problems",
                                     "Problems the config source reports now (bad files, documents, resources).")
        problems.add_metric([], problem_count)
        kept = GaugeMetricFamily("vocelio_config_resources_kept_last_good",
                                 "Resources served from their last good version because their file is broken.")
        kept.add_metric([], kept_count)
        yield restarts
        yield up
        yield problems
        yield kept
