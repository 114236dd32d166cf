"""The live /metrics of a gateway that served traffic, and the operator's metrics
as its HTTP server serves them, pass `promtool check metrics` (Prometheus' own
linter: names, suffixes, help, types); the request counter carries the bounded
`code` label, bytes are counted, and `vocelio_build_info` is there."""

from __future__ import annotations

import shutil
import subprocess
import urllib.request

import pytest
from prometheus_client import start_http_server

from tests.harness.app_fixtures import GatewayFactory, UpstreamFactory, service
from tests.harness.controlplane import free_port
from vocelio_contract.config import GatewayConfig
from vocelio_operator.kube.metrics import OperatorMetrics


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is missing: `make system-deps` installs Debian's prometheus package")
    return found


def check_metrics(text: str) -> None:
    done = subprocess.run([promtool(), "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert not done.stdout.strip(), (done.stdout, done.stderr)
    assert not done.stderr.strip(), (done.stdout, done.stderr)


async def test_the_gateway_metrics_pass_promtool_and_carry_code_bytes_and_build(
        upstream_factory: UpstreamFactory, gateway_factory: GatewayFactory) -> None:
    up = await upstream_factory()
    gw = await gateway_factory(GatewayConfig(services=[service("svc", up.endpoint())]))
    assert (await gw.get("/api/v1/svc/x"))[0] == 200
    assert (await gw.get("/nowhere"))[0] == 404
    status, _, body = await gw.get("/metrics")
    text = body.decode()
    assert status == 200
    check_metrics(text)
    assert 'vocelio_requests_total{code="200",code_class="2xx",method="GET",service="svc"} 1.0' in text
    assert 'code="404",code_class="4xx"' in text
    assert 'vocelio_request_bytes_total{service="svc"}' in text
    assert 'vocelio_response_bytes_total{service="svc"}' in text
    assert 'vocelio_build_info{commit="' in text
    assert 'component="proxy"' in text
    assert "vocelio_requests_in_flight " in text  # the HPA's metric keeps its name


def test_the_operator_metrics_served_over_http_pass_promtool() -> None:
    metrics = OperatorMetrics()
    metrics.reconciles.labels("ok").inc()
    metrics.render_duration.observe(0.01)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=metrics.registry)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            text = answer.read().decode()
    finally:
        server.shutdown()
        thread.join(10)
    check_metrics(text)
    assert 'vocelio_operator_reconciles_total{result="ok"} 1.0' in text
    assert 'vocelio_build_info{commit="' in text
    assert 'component="operator"' in text
