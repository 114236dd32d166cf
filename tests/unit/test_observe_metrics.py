"""The request counter's `code` label is bounded and `code_class` agrees with it;
bytes and build_info are exposed; the operator has build_info too."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from vocelio_operator.kube.metrics import OperatorMetrics
from vocelio_proxy.process.metrics import CODE_LABELS, ProxyMetrics, code_label


def families(registry) -> dict:  # type: ignore[no-untyped-def,type-arg]
    return {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}


def test_the_code_label_is_exact_for_registered_statuses_and_a_class_otherwise() -> None:
    assert [code_label(s) for s in (200, 404, 499, 503, 299, 599, 0, 1000, -1)] == [
        "200", "404", "499", "503", "2xx", "5xx", "5xx", "5xx", "5xx"]
    assert len(set(CODE_LABELS)) < 80  # bounded, whatever statuses backends invent


def test_requests_carry_code_and_class_and_bytes_are_counted_by_service() -> None:
    metrics = ProxyMetrics(lambda: None)
    for status in (200, 200, 404, 599):
        metrics.count_request("svc", "GET", code_label(status), 0.01)
    metrics.count_bytes("svc", 100, 2000)
    metrics.count_bytes("svc", 50, 10)
    found = families(metrics.registry)
    samples = {tuple(sorted(s.labels.items())): s.value for s in found["vocelio_requests"].samples}
    assert samples[(("code", "200"), ("code_class", "2xx"), ("method", "GET"), ("service", "svc"))] == 2
    assert samples[(("code", "5xx"), ("code_class", "5xx"), ("method", "GET"), ("service", "svc"))] == 1
    assert found["vocelio_request_bytes"].samples[0].value == 150
    assert found["vocelio_response_bytes"].samples[0].value == 2010
    assert metrics.requests_by_class()[("svc", "GET", "4xx")] == 1


def test_both_components_expose_build_info(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("VOCELIO_BUILD_COMMIT", "0123abcd")
    for registry, component in ((ProxyMetrics(lambda: None).registry, "proxy"),
                                (OperatorMetrics().registry, "operator")):
        (sample,) = families(registry)["vocelio_build_info"].samples
        assert sample.value == 1
        assert sample.labels["component"] == component
        assert sample.labels["version"] == "0.1.0"
        assert sample.labels["commit"] == "0123abcd"
    monkeypatch.setenv("VOCELIO_BUILD_COMMIT", "not a commit\n")
    (sample,) = families(ProxyMetrics(lambda: None).registry)["vocelio_build_info"].samples
    assert sample.labels["commit"] == "unknown"
