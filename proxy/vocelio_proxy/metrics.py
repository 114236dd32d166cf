"""Prometheus metrics of the proxy: one registry per application (no globals).
Names and labels are a contract for the HPA, dashboards and alerts; they are
listed in the README. Per-request series are incremented by the proxy handler;
state gauges (breakers, endpoints) are read at scrape time by a collector."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from .runtime import GatewayRuntime

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ProxyMetrics:
    def __init__(self, runtime: Callable[[], GatewayRuntime | None]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("vocelio_requests", "Requests answered, by service, method and status class.",
                                ["service", "method", "code_class"], registry=r)
        self.request_duration = Histogram("vocelio_request_duration_seconds",
                                          "Time from request received to response headers sent.",
                                          ["service"], buckets=LATENCY_BUCKETS, registry=r)
        self.upstream_duration = Histogram("vocelio_upstream_duration_seconds",
                                           "Time from request sent upstream to response headers.",
                                           ["service"], buckets=LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge("vocelio_requests_in_flight", "Requests being served by this process.",
                               registry=r)
        self.retries = Counter("vocelio_upstream_retries", "Retried upstream attempts.", ["service", "reason"],
                               registry=r)
        self.upstream_errors = Counter("vocelio_upstream_errors", "Upstream failures by kind.",
                                       ["service", "kind"], registry=r)
        self.config_reloads = Counter("vocelio_config_reloads", "Config load attempts by result.", ["result"],
                                      registry=r)
        self.config_last_success = Gauge("vocelio_config_last_reload_success_timestamp_seconds",
                                         "Wall time of the last applied config.", registry=r)
        self.ratelimit_decisions = Counter("vocelio_ratelimit_decisions", "Rate-limit decisions by tier and result.",
                                           ["tier", "result"], registry=r)
        self.ratelimit_backend_errors = Counter("vocelio_ratelimit_backend_errors",
                                                "Rate-limit store (Redis) failures.", registry=r)
        self.ratelimit_fallback = Gauge("vocelio_ratelimit_fallback_active",
                                        "1 while decisions use the in-process fallback limiter.", registry=r)
        self.ratelimit_latency = Histogram("vocelio_ratelimit_store_duration_seconds",
                                           "Latency of one rate-limit store round trip.",
                                           buckets=LATENCY_BUCKETS, registry=r)
        self.auth_failures = Counter("vocelio_auth_failures", "Rejected authentications by reason.",
                                     ["reason"], registry=r)
        r.register(_StateCollector(runtime))
        self._request_children: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        self._upstream_children: dict[str, Any] = {}

    def count_request(self, service: str, method: str, code_class: str, seconds: float) -> None:
        """Count one answered request; label children are cached (labels() takes a lock)."""
        key = (service, method, code_class)
        children = self._request_children.get(key)
        if children is None:
            children = (self.requests.labels(service, method, code_class), self.request_duration.labels(service))
            self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def observe_upstream(self, service: str, seconds: float) -> None:
        child = self._upstream_children.get(service)
        if child is None:
            child = self._upstream_children[service] = self.upstream_duration.labels(service)
        child.observe(seconds)


class _StateCollector(Collector):
    def __init__(self, runtime: Callable[[], GatewayRuntime | None]) -> None:
        self._runtime = runtime

    def collect(self) -> Iterator[GaugeMetricFamily | InfoMetricFamily]:
        rt = self._runtime()
        breaker = GaugeMetricFamily("vocelio_circuit_breaker_state",
                                    "Breaker state per service: 0 closed, 1 half-open, 2 open.", labels=["service"])
        healthy = GaugeMetricFamily("vocelio_endpoints_healthy", "Endpoints eligible for traffic.", labels=["service"])
        total = GaugeMetricFamily("vocelio_endpoints", "Endpoints known from config.", labels=["service"])
        info = InfoMetricFamily("vocelio_config", "The applied config.")
        if rt is not None:
            for sid, svc in sorted(rt.services.items()):
                breaker.add_metric([sid], svc.breaker.state.gauge)
                h, t = svc.balancer.counts()
                healthy.add_metric([sid], h)
                total.add_metric([sid], t)
            info.add_metric([], {"version": rt.config.version, "hash": rt.config.hash,
                                 "schema_version": str(rt.config.schema_version)})
        yield breaker
        yield healthy
        yield total
        yield info
