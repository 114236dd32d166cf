"""The event-loop metrics expose valid Prometheus histograms and counters."""

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from vocelio_proxy.process.metrics import ProxyMetrics


def test_loop_histograms_are_cumulative_with_sum_and_count() -> None:
    metrics = ProxyMetrics(lambda: None)
    for seconds in (0.0005, 0.003, 0.003, 0.2, 99.0):
        metrics.count_request("svc", "GET", "200", seconds)
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(metrics.registry).decode())}
    samples = {(s.name, s.labels.get("le")): s.value for s in families["vocelio_request_duration_seconds"].samples}
    assert samples[("vocelio_request_duration_seconds_bucket", "0.001")] == 1
    assert samples[("vocelio_request_duration_seconds_bucket", "0.005")] == 3
    assert samples[("vocelio_request_duration_seconds_bucket", "0.25")] == 4
    assert samples[("vocelio_request_duration_seconds_bucket", "30.0")] == 4
    assert samples[("vocelio_request_duration_seconds_bucket", "+Inf")] == 5
    assert samples[("vocelio_request_duration_seconds_count", None)] == 5
    assert abs(samples[("vocelio_request_duration_seconds_sum", None)] - 99.2065) < 1e-9
    requests = families["vocelio_requests"].samples
    assert requests[0].labels == {"service": "svc", "method": "GET", "code_class": "2xx", "code": "200"}
    assert requests[0].value == 5
