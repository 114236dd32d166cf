"""The test control plane is a real Kubernetes: controllers reconcile
Deployments into ReplicaSets and pods, EndpointSlices follow pod readiness, and
traffic reaches pods in their network namespaces."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any, TypeVar

from tests.harness.controlplane import ControlPlane
from tests.harness.kube import Kube, KubeError
from tests.harness.kubelet import bind_and_run, delete_pod, wait_for_pods
from tests.harness.podnet import PodNetwork
from tests.harness.waiting import poll

T = TypeVar("T")

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: echo}
spec:
  replicas: 2
  selector: {matchLabels: {app: echo}}
  template:
    metadata: {labels: {app: echo}}
    spec:
      containers: [{name: echo, image: "registry.invalid/echo:1.0", ports: [{name: http, containerPort: 8080}]}]
---
apiVersion: v1
kind: Service
metadata: {name: echo}
spec:
  selector: {app: echo}
  ports: [{name: http, port: 80, targetPort: http}]
"""


def slice_addresses(kube: Kube, ns: str, service: str) -> set[str]:
    slices = kube.get(f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices"
                      f"?labelSelector=kubernetes.io/service-name={service}")["items"]
    return {a for s in slices for ep in (s.get("endpoints") or [])
            if (ep.get("conditions") or {}).get("ready") for a in ep["addresses"]}


def test_kubectl_and_server_report_the_stamped_version(control_plane: ControlPlane) -> None:
    out = json.loads(control_plane.kubectl("version", "-o", "json").stdout)
    assert out["clientVersion"]["gitVersion"] == "v1.37.2"
    assert out["serverVersion"]["gitVersion"] == "v1.37.2"
    assert out["serverVersion"]["minor"] == "37"


def test_helm_sees_the_server_version_through_kube_version_checks(control_plane: ControlPlane,
                                                                  namespace: str, tmp_path: Path) -> None:
    chart = tmp_path / "probe"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text('apiVersion: v2\nname: probe\nversion: 0.1.0\nkubeVersion: ">=1.37.0-0"\n')
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: probe}\ndata:\n"
        "  kube: {{ .Capabilities.KubeVersion.Version | quote }}\n")
    helm = str(control_plane.env()["PATH"].split(":")[0] + "/helm")
    import subprocess

    version = subprocess.run([helm, "version", "--short"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith("v3.")
    subprocess.run([helm, "install", "probe", str(chart), "-n", namespace, "--wait", "--timeout", "60s"],
                   capture_output=True, text=True, check=True, env=control_plane.env())
    data = json.loads(control_plane.kubectl("get", "configmap", "probe", "-n", namespace, "-o", "json").stdout)
    assert data["data"]["kube"] == "v1.37.2"


def test_endpointslices_follow_pods_the_harness_makes_ready(control_plane: ControlPlane, kube: Kube,
                                                           pod_network: PodNetwork, namespace: str) -> None:
    control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=DEPLOYMENT)
    pods = wait_for_pods(kube, namespace, "app=echo", 2)
    hosts = {}
    for pod in pods:
        host = pod_network.create(f"{namespace}/{pod}")
        host.serve(8080, pod, pod_network.log_dir)
        bind_and_run(kube, namespace, pod, host.address)
        hosts[pod] = host
    expected = {h.address for h in hosts.values()}
    poll("EndpointSlice with both pods", lambda: slice_addresses(kube, namespace, "echo") == expected)

    for pod, host in hosts.items():
        with urllib.request.urlopen(f"http://{host.address}:8080/hello", timeout=5) as resp:
            assert json.loads(resp.read())["pod"] == pod

    gone = pods[0]
    delete_pod(kube, namespace, gone)
    pod_network.remove(f"{namespace}/{gone}")
    remaining = {hosts[pods[1]].address}
    poll("deleted pod's address removed", lambda: slice_addresses(kube, namespace, "echo") == remaining)


def test_garbage_collection_deletes_the_replicaset_with_its_deployment(control_plane: ControlPlane, kube: Kube,
                                                                      namespace: str) -> None:
    control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=DEPLOYMENT)

    def replicasets() -> list[dict[str, Any]]:
        return list(kube.get(f"/apis/apps/v1/namespaces/{namespace}/replicasets")["items"])

    rs = poll("ReplicaSet", replicasets)
    assert rs[0]["metadata"]["ownerReferences"][0]["kind"] == "Deployment"
    kube.request("DELETE", f"/apis/apps/v1/namespaces/{namespace}/deployments/echo",
                 {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"})

    def rs_gone() -> bool:
        try:
            kube.get(f"/apis/apps/v1/namespaces/{namespace}/replicasets/{rs[0]['metadata']['name']}")
        except KubeError as exc:
            return exc.status == 404
        return False

    poll("ReplicaSet garbage-collected", rs_gone)
