"""A stand-in for the scheduler and kubelet, for the pods a test names: a Node
object, a binding of the pod to it (`pods/binding`, so Deployment-made pods
work too) and a status patch with phase Running, a Ready condition and a pod IP."""

from __future__ import annotations

import datetime as dt
from typing import Any

from .controlplane import ADVERTISE_ADDRESS
from .kube import Kube, KubeError
from .waiting import poll

NODE = "harness-node"


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ensure_node(kube: Kube, name: str = NODE) -> None:
    try:
        kube.create("/api/v1/nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {
            "name": name, "labels": {"kubernetes.io/hostname": name, "topology.kubernetes.io/zone": "test-a"}}})
    except KubeError as exc:
        if exc.status != 409:
            raise
    kube.merge_patch(f"/api/v1/nodes/{name}/status", {"status": {
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "harness",
                        "lastHeartbeatTime": _now(), "lastTransitionTime": _now()}],
        "addresses": [{"type": "InternalIP", "address": ADVERTISE_ADDRESS}],
        "allocatable": {"cpu": "64", "memory": "256Gi", "pods": "500"},
        "capacity": {"cpu": "64", "memory": "256Gi", "pods": "500"},
    }})


def bind_and_run(kube: Kube, namespace: str, pod: str, ip: str, ready: bool = True, node: str = NODE) -> None:
    path = f"/api/v1/namespaces/{namespace}/pods/{pod}"
    obj = kube.get(path)
    if not obj["spec"].get("nodeName"):
        kube.create(f"{path}/binding", {"apiVersion": "v1", "kind": "Binding",
                                        "metadata": {"name": pod, "namespace": namespace},
                                        "target": {"apiVersion": "v1", "kind": "Node", "name": node}})
    set_ready(kube, namespace, pod, ip, ready, obj)


def set_ready(kube: Kube, namespace: str, pod: str, ip: str, ready: bool, obj: dict[str, Any] | None = None) -> None:
    path = f"/api/v1/namespaces/{namespace}/pods/{pod}"
    obj = obj or kube.get(path)
    flag = "True" if ready else "False"
    conditions = [{"type": t, "status": s, "lastTransitionTime": _now()} for t, s in (
        ("PodScheduled", "True"), ("Initialized", "True"), ("ContainersReady", flag), ("Ready", flag))]
    statuses = [{"name": c["name"], "image": c.get("image", ""), "imageID": "", "ready": ready, "restartCount": 0,
                 "started": True, "state": {"running": {"startedAt": _now()}}} for c in obj["spec"]["containers"]]
    kube.merge_patch(f"{path}/status", {"status": {
        "phase": "Running", "conditions": conditions, "podIP": ip, "podIPs": [{"ip": ip}],
        "hostIP": ADVERTISE_ADDRESS, "startTime": _now(), "containerStatuses": statuses}})


def wait_for_pods(kube: Kube, namespace: str, selector: str, count: int, deadline_s: float = 30) -> list[str]:
    def names() -> list[str]:
        items = kube.get(f"/api/v1/namespaces/{namespace}/pods?labelSelector={selector}")["items"]
        found = sorted(p["metadata"]["name"] for p in items if not p["metadata"].get("deletionTimestamp"))
        return found if len(found) == count else []

    return poll(f"{count} pods for {selector}", names, deadline_s, interval=0.1)


def delete_pod(kube: Kube, namespace: str, pod: str) -> None:
    """Delete at once, as a kubelet confirming termination would."""
    kube.request("DELETE", f"/api/v1/namespaces/{namespace}/pods/{pod}",
                 {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0})
