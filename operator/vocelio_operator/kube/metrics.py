"""Prometheus metrics of the operator (its own registry, served on the metrics
port by the CLI). Names are a contract for dashboards and alerts; they are
documented in docs/operations/observability.md."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from vocelio_contract.buildinfo import build_labels


class OperatorMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.reconciles = Counter("vocelio_operator_reconciles", "Reconcile passes by result.", ["result"],
                                  registry=r)
        for result in ("ok", "error"):
            self.reconciles.labels(result)  # series exist at 0, so rate() and alerts see them from the start
        self.render_duration = Histogram("vocelio_operator_render_duration_seconds", "Time to render the config.",
                                         buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
                                         registry=r)
        self.config_bytes = Gauge("vocelio_operator_config_bytes", "Size of the rendered config.", registry=r)
        self.config_writes = Counter("vocelio_operator_config_writes", "ConfigMap objects written.", registry=r)
        self.endpoints_tracked = Gauge("vocelio_operator_endpoints_tracked",
                                       "Endpoint addresses known from EndpointSlices.", registry=r)
        self.last_write = Gauge("vocelio_operator_last_successful_write_timestamp_seconds",
                                "Wall time of the last successful config write.", registry=r)
        labels = build_labels("operator")
        build = Gauge("vocelio_build_info", "The running build: version, Python and source commit (always 1).",
                      list(labels), registry=r)
        build.labels(**labels).set(1)
        self.status_patches = Counter("vocelio_operator_status_patches", "Status subresource patches.",
                                      registry=r)
