"""`make bench-operator`: how fast configuration follows the cluster. A script,
not a test: it prints figures.

1. Render: time and config size for 1,000 services x 20 endpoints (pure renderer),
   beside a reference measured in the same run (json.dumps of the same config).
2. Reconcile latency on the real test control plane: 50 VocelioServices with 4
   endpoints each (EndpointSlices written directly), then 100 EndpointSlice
   changes; for each, the time until the config ConfigMap carries the new address
   and until a proxy watching the API reports it in /status. p50 / p99.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.harness.controlplane import free_port, start_control_plane  # noqa: E402
from tests.harness.kube import Kube  # noqa: E402
from tests.harness.stack import BIN, CONFIG_NAME, CONFIG_NAMESPACE, install_crds, poll, start_operator, start_process  # noqa: E402

from vocelio_operator.model.resources import DiscoveredEndpoint, Metadata, VocelioServiceResource, VocelioServiceSpec  # noqa: E402
from vocelio_operator.translation.rendering import render_config  # noqa: E402


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def bench_render() -> None:
    services, endpoints = [], {}
    for i in range(1000):
        spec = VocelioServiceSpec.model_validate({"pathPrefix": f"/api/v1/svc-{i}", "aliases": [f"/svc-{i}/v1"],
                                                  "backends": [{"serviceRef": {"name": f"svc-{i}", "port": "http"}}]})
        services.append(VocelioServiceResource(Metadata(name=f"svc-{i}", namespace="bench"), spec))
        ports = {"http": 8080}  # one mapping per EndpointSlice, as discovery builds them
        endpoints[("bench", f"svc-{i}")] = [
            DiscoveredEndpoint(f"198.18.{i // 50}.{(i % 50) * 5 + j}", True, f"svc-{i}-{j}", ports)
            for j in range(20)]
    times = []
    for _ in range(5):
        started = time.perf_counter()
        result = render_config(services, [], endpoints)
        text = result.text  # what the operator writes to the ConfigMap
        times.append(time.perf_counter() - started)
    config = result.config  # parsed (validated) once, outside both timers
    references = []
    for _ in range(5):
        started = time.perf_counter()
        json.dumps(config.model_dump(mode="json"))
        references.append(time.perf_counter() - started)
    render, reference = statistics.median(times), statistics.median(references)
    print(f"render 1,000 services x 20 endpoints: median {render * 1000:.0f} ms "
          f"(min {min(times) * 1000:.0f} ms); config {len(text.encode()) / 1024:.0f} KiB; "
          f"reference json.dumps of the same config: median {reference * 1000:.0f} ms; "
          f"render / reference {render / reference:.2f}x")


def slice_body(ns: str, name: str, addresses: list[str]) -> dict[str, object]:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"{name}-bench", "namespace": ns,
                         "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": [a], "conditions": {"ready": True}} for a in addresses]}


def bench_reconcile() -> None:
    cp = start_control_plane()
    procs = []
    try:
        kube = Kube(cp.server, cp.ssl_context())
        install_crds(cp, kube)
        ns = "bench"
        kube.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        docs = []
        for i in range(50):
            name = f"svc-{i}"
            kube.create(f"/api/v1/namespaces/{ns}/services", {"apiVersion": "v1", "kind": "Service",
                        "metadata": {"name": name}, "spec": {"ports": [{"name": "http", "port": 80}]}})
            kube.create(f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices",
                        slice_body(ns, name, [f"198.18.{i}.{j + 1}" for j in range(4)]))
            docs.append(f"apiVersion: gateway.vocelio.ai/v1alpha1\nkind: VocelioService\nmetadata: {{name: {name}}}\n"
                        f"spec: {{pathPrefix: /api/v1/{name}, backends: [{{serviceRef: {{name: {name}, port: http}}}}],"
                        f" healthCheck: {{enabled: false}}}}\n")
        cp.kubectl("apply", "-n", ns, "-f", "-", input="---\n".join(docs))
        operator, _ = start_operator(cp, "bench-operator", ["--log-level", "DEBUG"])
        procs.append(operator)
        port = free_port()
        procs.append(start_process(cp, "bench-proxy", [str(BIN / "vocelio-proxy"), "serve", "--host", "127.0.0.1",
                                                       "--port", str(port), "--no-access-log", "--config-from-api",
                                                       f"{CONFIG_NAMESPACE}/{CONFIG_NAME}"],
                                   env={"VOCELIO_CONFIG_POLL_S": "0.02"}))

        def config_text() -> str:
            return str(kube.get(f"/api/v1/namespaces/{CONFIG_NAMESPACE}/configmaps/{CONFIG_NAME}")["data"]
                       ["gateway.json"])

        poll("all 50 services rendered", lambda: config_text().count('"namespace":"bench"') == 50, 60)

        def proxy_status() -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=2) as resp:
                return str(resp.read().decode())

        poll("proxy loaded the config", lambda: proxy_status().count("/api/v1/svc-") >= 50, 60)
        to_configmap, to_proxy = [], []
        for change in range(100):
            i = change % 50
            fresh = f"198.19.{change // 200}.{change % 200 + 1}"
            path = f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices/svc-{i}-bench"
            current = kube.get(path)
            current["endpoints"][0]["addresses"] = [fresh]
            started = time.monotonic()
            kube.request("PUT", path, current)
            poll("ConfigMap update", lambda a=fresh: f'"{a}"' in config_text(), 10, interval=0.005)
            to_configmap.append(time.monotonic() - started)
            poll("proxy update", lambda a=fresh: f'"{a}"' in proxy_status(), 10, interval=0.005)
            to_proxy.append(time.monotonic() - started)
        for label, values in (("EndpointSlice change -> ConfigMap", to_configmap),
                              ("EndpointSlice change -> proxy (API watch)", to_proxy)):
            print(f"{label}: p50 {percentile(values, 50) * 1000:.0f} ms, p99 {percentile(values, 99) * 1000:.0f} ms "
                  f"over {len(values)} changes (operator coalescing window 50 ms)")
    finally:
        for proc in procs:
            proc.stop()
        cp.stop()
        if "--keep-logs" in sys.argv:
            print(f"logs in {cp.logs}")


if __name__ == "__main__":
    bench_render()
    bench_reconcile()
