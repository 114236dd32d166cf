"""From kubectl to proxied traffic on the real control plane: CRDs, the
operator writing the config ConfigMap and status, proxies consuming it from a
mounted volume and from the API, and traffic reaching pods in their network
namespaces. The tests in this module share one stack and run in order."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.harness.controlplane import ControlPlane, free_port
from tests.harness.kube import Kube, KubeError
from tests.harness.kubelet import delete_pod
from tests.harness.podnet import PodNetwork
from tests.harness.stack import (
    BIN,
    CONFIG_NAME,
    CONFIG_NAMESPACE,
    Backend,
    ConfigMapMirror,
    Process,
    http_json,
    install_crds,
    poll,
    start_operator,
    start_process,
)

NS = "team-voice"


def vocelio_service(name: str, prefix: str, service: str, extra: str = "") -> str:
    return f"""apiVersion: gateway.vocelio.ai/v1alpha1
kind: VocelioService
metadata: {{name: {name}, namespace: {NS}}}
spec:
  pathPrefix: {prefix}
  aliases: [/{name}/v1]
  rewrite: /
  backends: [{{serviceRef: {{name: {service}, port: http}}}}]
  healthCheck: {{path: /health, intervalSeconds: 0.5, timeoutSeconds: 0.5}}
{extra}"""


@dataclass
class Stack:
    cp: ControlPlane
    kube: Kube
    backend: Backend
    operator: Process
    operator_metrics: int
    file_proxy: str
    api_proxy: str
    mirror: ConfigMapMirror
    procs: list[Process]

    def config(self) -> dict[str, Any]:
        cm = self.kube.get(f"/api/v1/namespaces/{CONFIG_NAMESPACE}/configmaps/{CONFIG_NAME}")
        return dict(json.loads(cm["data"]["gateway.json"]))

    def vsvc(self, name: str) -> dict[str, Any]:
        return dict(self.kube.get(f"/apis/gateway.vocelio.ai/v1alpha1/namespaces/{NS}/vocelioservices/{name}"))


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond["type"] == kind:
            return dict(cond)
    return {}


def pods_reached(url: str, n: int = 24) -> set[str]:
    seen = set()
    for _ in range(n):
        status, body = http_json(url)
        if status == 200:
            seen.add(body["pod"])
    return seen


@pytest.fixture(scope="module")
def stack(control_plane: ControlPlane, kube: Kube, pod_network: PodNetwork,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    install_crds(control_plane, kube)
    try:
        kube.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    except KubeError as exc:
        if exc.status != 409:
            raise
    backend = Backend(control_plane, kube, pod_network, NS, "voice-lab")
    backend.scale(2)
    operator, metrics_port = start_operator(control_plane)
    mount = tmp_path_factory.mktemp("config-volume")
    mirror = ConfigMapMirror(kube, mount).start()
    procs = [operator]
    ports = []
    for name, args in (("proxy-file", ["--config", str(mount)]),
                       ("proxy-api", ["--config-from-api", f"{CONFIG_NAMESPACE}/{CONFIG_NAME}"])):
        port = free_port()
        procs.append(start_process(control_plane, name, [str(BIN / "vocelio-proxy"), "serve", "--host", "127.0.0.1",
                                                         "--port", str(port), *args],
                                   env={"VOCELIO_CONFIG_POLL_S": "0.1"}))
        ports.append(port)
    stack = Stack(control_plane, kube, backend, operator, metrics_port, f"http://127.0.0.1:{ports[0]}",
                  f"http://127.0.0.1:{ports[1]}", mirror, procs)
    try:
        yield stack
    finally:
        mirror.stop()
        for proc in reversed(procs):
            proc.stop()


def test_invalid_resources_are_rejected_by_the_api_server_with_the_cel_message(stack: Stack) -> None:
    bad = vocelio_service("bad", "/api/v1/bad", "voice-lab").replace(
        "rewrite: /", "rewrite: /\n  circuitBreaker: {consecutiveFailures: 1, halfOpenMaxProbes: 2}")
    result = stack.cp.kubectl("apply", "-f", "-", input=bad, check=False)
    assert result.returncode != 0
    assert "halfOpenMaxProbes must not exceed consecutiveFailures" in result.stderr


def test_kubectl_explain_teaches_the_api(stack: Stack) -> None:
    out = stack.cp.kubectl("explain", "vocelioservice.spec.circuitBreaker.openSeconds").stdout
    assert "Time the breaker stays open before probing" in out


def test_the_operator_writes_the_config_and_both_proxies_route_to_both_pods(stack: Stack) -> None:
    stack.cp.kubectl("apply", "-f", "-", input=vocelio_service("voice-lab", "/api/v1/voice-lab", "voice-lab"))

    def routed() -> bool:
        services = stack.config()["services"]
        return bool(services) and len(services[0]["backends"][0]["endpoints"]) == 2

    poll("config with 2 endpoints", routed)
    expected = set(stack.backend.hosts)
    for proxy in (stack.file_proxy, stack.api_proxy):
        poll(f"{proxy} reaches both pods", lambda p=proxy: pods_reached(f"{p}/api/v1/voice-lab/synth") == expected)
        status, body = http_json(f"{proxy}/voice-lab/v1/synth?x=1")
        assert status == 200
        assert body["path"] == "/synth?x=1"


def test_status_conditions_and_printer_columns_report_the_outcome(stack: Stack) -> None:
    def ready() -> dict[str, Any] | None:
        obj = stack.vsvc("voice-lab")
        return obj if condition(obj, "Ready").get("status") == "True" else None

    obj = poll("Ready=True", ready)
    status = obj["status"]
    assert status["endpoints"] == "2/2"
    assert status["observedGeneration"] == obj["metadata"]["generation"]
    for kind in ("Accepted", "ResolvedRefs", "Programmed"):
        assert condition(obj, kind)["status"] == "True"
        assert condition(obj, kind)["observedGeneration"] == obj["metadata"]["generation"]
    table = stack.cp.kubectl("get", "vocelio", "-n", NS).stdout
    assert "/api/v1/voice-lab" in table
    assert "2/2" in table
    assert "Ready" in table
    events = stack.cp.kubectl("get", "events", "-n", NS, "--field-selector",
                              "involvedObject.kind=VocelioService,involvedObject.name=voice-lab").stdout
    assert "Accepted" in events


def test_scaling_the_backend_brings_new_pods_into_rotation(stack: Stack) -> None:
    pods = stack.backend.scale(4)
    assert len(pods) == 4
    poll("4 endpoints in config", lambda: len(stack.config()["services"][0]["backends"][0]["endpoints"]) == 4)
    poll("all 4 pods reached", lambda: pods_reached(f"{stack.file_proxy}/api/v1/voice-lab/x", 40) == set(pods))


def test_deleting_a_pod_takes_it_out_of_rotation(stack: Stack) -> None:
    victim = sorted(stack.backend.hosts)[0]
    address = stack.backend.hosts.pop(victim)
    delete_pod(stack.kube, NS, victim)
    stack.backend.net.remove(f"{NS}/{victim}")

    def gone() -> bool:
        eps = stack.config()["services"][0]["backends"][0]["endpoints"]
        return all(e["address"] != address for e in eps)

    assert poll("deleted pod's address leaves the config", gone)

    def not_reached() -> set[str]:
        seen = pods_reached(f"{stack.api_proxy}/api/v1/voice-lab/x", 30)
        return seen if victim not in seen else set()

    assert victim not in poll("proxy stops reaching it", not_reached)


def test_a_prefix_conflict_is_reported_on_the_newer_resource(stack: Stack) -> None:
    # creationTimestamp has one-second resolution: wait until "now" is a later second than the older one's.
    older = stack.vsvc("voice-lab")["metadata"]["creationTimestamp"]
    poll("a later creation second", lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) > older, 5)
    stack.cp.kubectl("apply", "-f", "-", input=vocelio_service("voice-lab-v2", "/api/v1/voice-lab", "voice-lab"))

    def conflicted() -> dict[str, Any] | None:
        cond = condition(stack.vsvc("voice-lab-v2"), "Accepted")
        return cond if cond.get("reason") == "PrefixConflict" else None

    cond = poll("PrefixConflict on the newer resource", conflicted)
    assert cond["status"] == "False"
    assert "voice-lab" in cond["message"]
    assert condition(stack.vsvc("voice-lab"), "Accepted")["status"] == "True"
    stack.cp.kubectl("delete", "vocelioservice", "voice-lab-v2", "-n", NS)


def test_restarting_the_operator_rewrites_nothing_when_nothing_changed(stack: Stack) -> None:
    before = stack.kube.get(f"/api/v1/namespaces/{CONFIG_NAMESPACE}/configmaps/{CONFIG_NAME}")
    status_before = stack.vsvc("voice-lab")["metadata"]["resourceVersion"]
    stack.operator.stop()
    operator, metrics_port = start_operator(stack.cp, "operator-restarted")
    stack.procs.append(operator)
    stack.operator, stack.operator_metrics = operator, metrics_port

    def reconciled() -> bool:
        with __import__("urllib.request").request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics") as resp:
            text = resp.read().decode()
        import re

        found = re.search(r'vocelio_operator_reconciles_total\{result="ok"\} ([0-9.]+)', text)
        return bool(found and float(found.group(1)) >= 1)

    poll("restarted operator reconciled", reconciled)
    after = stack.kube.get(f"/api/v1/namespaces/{CONFIG_NAMESPACE}/configmaps/{CONFIG_NAME}")
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert stack.vsvc("voice-lab")["metadata"]["resourceVersion"] == status_before


def test_proxies_keep_serving_while_the_api_server_is_down_and_the_operator_recovers(stack: Stack) -> None:
    stack.cp.stop_apiserver()
    try:
        for proxy in (stack.file_proxy, stack.api_proxy):
            status, body = http_json(f"{proxy}/api/v1/voice-lab/during-outage")
            assert status == 200, body
    finally:
        stack.cp.start_apiserver()
    stack.cp.kubectl("apply", "-f", "-", input=vocelio_service("analytics", "/api/v1/analytics", "voice-lab"))
    poll("operator applied a change after the outage",
         lambda: any(s["name"] == "analytics" for s in stack.config()["services"]), 90)
    poll("api proxy reconnected and routes it",
         lambda: http_json(f"{stack.api_proxy}/api/v1/analytics/x")[0] == 200, 60)


def test_deleting_a_vocelio_service_removes_its_route(stack: Stack) -> None:
    stack.cp.kubectl("delete", "vocelioservice", "analytics", "-n", NS)
    for proxy in (stack.file_proxy, stack.api_proxy):
        def removed(p: str = proxy) -> dict[str, Any] | None:
            status, body = http_json(f"{p}/api/v1/analytics/x")
            return body if status == 404 else None

        envelope = poll(f"404 from {proxy}", removed)
        assert envelope["status_code"] == 404
        assert "/api/v1/analytics/x" in envelope["message"]


def test_a_file_proxy_reads_a_sharded_config(tmp_path: Path) -> None:
    from tests.harness.mount import write_configmap_volume
    from vocelio_contract.config import Backend as B
    from vocelio_contract.config import Endpoint, GatewayConfig, Service
    from vocelio_contract.sharding import shard_config
    from vocelio_proxy.lifecycle.sources import FileSource

    services = [Service(name=f"svc-{i}", prefixes=[f"/api/v1/svc-{i}"],
                        backends=[B(name="b", endpoints=[Endpoint(address=f"198.18.{i // 250}.{i % 250}", port=80)
                                                         ])]) for i in range(400)]
    config = GatewayConfig(services=services).seal()
    shards = shard_config(config.to_json(), config.hash, "cfg", 64 * 1024)
    assert len(shards) > 3
    files = {k: v.encode() for k, v in shards["cfg"].items()}
    for name, data in shards.items():
        if name != "cfg":
            files[f"part-{name.rsplit('-', 1)[1]}"] = data["part"].encode()
    write_configmap_volume(tmp_path, files)
    assert FileSource(tmp_path).load() == config


def test_api_key_secrets_reach_the_proxies_as_hashes_only(stack: Stack, tmp_path: Path) -> None:
    manifest = tmp_path / "key.yaml"
    import subprocess

    result = subprocess.run([str(BIN / "vocelio-gateway"), "mint-key", "--name", "ci", "--tenant", "acme",
                             # Keys are read in the gateway's namespace (plus tenancy.apiKeys.namespaces).
                             "--tier", "premium", "--namespace", CONFIG_NAMESPACE, "--output", str(manifest)],
                            capture_output=True, text=True, check=True)
    key = result.stderr.split("store it now): ")[1].split()[0]
    assert key not in manifest.read_text()
    stack.cp.kubectl("apply", "-f", str(manifest))

    def published() -> str | None:
        import base64

        secret = stack.kube.get(f"/api/v1/namespaces/{CONFIG_NAMESPACE}/secrets/vocelio-gateway-api-keys")
        text = base64.b64decode(secret["data"]["keys.json"]).decode()
        return text if key.split("_")[1] in text else None

    text = poll("API key hash published for the proxies", published)
    records = json.loads(text)
    assert records[0]["tenant"] == "acme"
    assert len(records[0]["hash"]) == 64
    assert key not in text


def test_a_second_replica_with_higher_priority_takes_over_and_the_first_stands_by(stack: Stack) -> None:
    pauses = stack.operator.said("Pausing operations in favour of")
    resumes = stack.operator.said("Resuming operations after the pause")
    second, _ = start_operator(stack.cp, "operator-replica-2", ["--priority", "10"])
    stack.procs.append(second)
    try:
        assert poll("first replica pauses",
                    lambda: stack.operator.said("Pausing operations in favour of") > pauses, 60)
        assert "Pausing operations" not in second.tail()
        stack.cp.kubectl("apply", "-f", "-", input=vocelio_service("workflows", "/api/v1/workflows", "voice-lab"))
        assert poll("the active replica renders",
                    lambda: any(s["name"] == "workflows" for s in stack.config()["services"]))
    finally:
        second.stop()
    assert poll("first replica resumes",
                lambda: stack.operator.said("Resuming operations after the pause") > resumes, 90)
    stack.cp.kubectl("delete", "vocelioservice", "workflows", "-n", NS)
    assert poll("the resumed replica renders",
                lambda: all(s["name"] != "workflows" for s in stack.config()["services"]))
