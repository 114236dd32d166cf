"""The full path on the test control plane: CRDs installed, the operator
running as its real CLI, a stand-in kubelet that mirrors the config ConfigMap
into a mounted-volume layout, proxies in file mode and API-watch mode, and
backend pods served from network namespaces."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .controlplane import ROOT, ControlPlane, HarnessError, free_port
from .kube import Kube, KubeError
from .kubelet import bind_and_run, wait_for_pods
from .mount import write_configmap_volume
from .podnet import PodNetwork
from .waiting import poll as wait_poll

CONFIG_NAMESPACE = "vocelio-system"
CONFIG_NAME = "vocelio-gateway-config"
BIN = Path(sys.executable).parent


def install_crds(cp: ControlPlane, kube: Kube) -> None:
    cp.kubectl("apply", "-f", str(ROOT / "crds"))
    # `kubectl wait` fails at once on a CRD whose status has no conditions yet: poll it.
    poll("CRDs established", lambda: cp.kubectl(
        "wait", "--for=condition=Established", "crd/vocelioservices.gateway.vocelio.ai",
        "crd/ratetiers.gateway.vocelio.ai", "crd/clusterkopfpeerings.kopf.dev",
        "crd/referencegrants.gateway.networking.k8s.io", "--timeout=30s", check=False).returncode == 0, 60)
    try:
        kube.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                           "metadata": {"name": CONFIG_NAMESPACE}})
    except KubeError as exc:
        if exc.status != 409:
            raise
    cp.kubectl("apply", "-f", "-", input="apiVersion: kopf.dev/v1\nkind: ClusterKopfPeering\n"
                                         "metadata: {name: vocelio-gateway}\n")


def http_json(url: str, timeout: float = 5) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        body = exc.read()
        return exc.code, json.loads(body) if body.startswith(b"{") else body.decode(errors="replace")


def poll(what: str, fn: Any, deadline_s: float = 30, interval: float = 0.05) -> Any:
    """`waiting.poll`, also retrying while the API server is away."""
    return wait_poll(what, fn, deadline_s, interval, errors=(OSError, KubeError, HarnessError))


@dataclass
class Process:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def said(self, line: str) -> int:
        """How often the process logged `line` over its whole log (`tail` holds only the
        last 4000 characters, so a count there can shrink as the log scrolls)."""
        return self.log.read_text(errors="replace").count(line)


def start_process(cp: ControlPlane, name: str, args: list[str], env: dict[str, str] | None = None) -> Process:
    log = cp.logs / f"{name}.log"
    proc = subprocess.Popen(args, stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True,
                            env={**cp.env(), **(env or {})}, cwd=ROOT)
    return Process(name, proc, log)


def start_operator(cp: ControlPlane, name: str = "operator", extra: list[str] | None = None) -> tuple[Process, int]:
    liveness = free_port()
    metrics = free_port()
    proc = start_process(cp, name, [str(BIN / "vocelio-gateway"), "operator", "--config-namespace", CONFIG_NAMESPACE,
                                    "--liveness-port", str(liveness), "--metrics-port", str(metrics),
                                    *(extra or [])])
    poll("operator liveness", lambda: http_json(f"http://127.0.0.1:{liveness}/healthz")[0] == 200, 60)
    return proc, metrics


class ConfigMapMirror:
    """Plays kubelet for a ConfigMap volume: copies the config ConfigMap(s) into
    `folder` with the `..data` symlink swap whenever their resourceVersion moves."""

    def __init__(self, kube: Kube, folder: Path) -> None:
        self.kube = kube
        self.folder = folder
        self._stop = threading.Event()
        self._seen: tuple[tuple[str, str], ...] = ()
        self.syncs = 0
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> ConfigMapMirror:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            # API server away: a kubelet keeps the last files too.
            with contextlib.suppress(OSError, KubeError):
                self.sync()
            self._stop.wait(0.1)

    def sync(self) -> None:
        listed = self.kube.get(f"/api/v1/namespaces/{CONFIG_NAMESPACE}/configmaps"
                               f"?labelSelector=gateway.vocelio.ai/config={CONFIG_NAME}")["items"]
        versions = tuple(sorted((cm["metadata"]["name"], cm["metadata"]["resourceVersion"]) for cm in listed))
        if versions == self._seen or not listed:
            return
        files: dict[str, bytes] = {}
        for cm in listed:
            name, data = cm["metadata"]["name"], cm.get("data") or {}
            if name == CONFIG_NAME:
                files.update({k: v.encode() for k, v in data.items()})
            elif name.startswith(f"{CONFIG_NAME}-part-"):
                files[f"part-{name.rsplit('-', 1)[1]}"] = data["part"].encode()
        write_configmap_volume(self.folder, files)
        self._seen = versions
        self.syncs += 1


@dataclass
class Backend:
    """A Deployment + Service whose pods the harness runs in network namespaces."""

    cp: ControlPlane
    kube: Kube
    net: PodNetwork
    namespace: str
    name: str
    hosts: dict[str, str] = field(default_factory=dict)

    def manifest(self, replicas: int) -> str:
        return f"""apiVersion: apps/v1
kind: Deployment
metadata: {{name: {self.name}, namespace: {self.namespace}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {self.name}}}}}
  template:
    metadata: {{labels: {{app: {self.name}}}}}
    spec:
      containers: [{{name: app, image: "registry.invalid/{self.name}:1", ports: [{{name: http, containerPort: 8080}}]}}]
---
apiVersion: v1
kind: Service
metadata: {{name: {self.name}, namespace: {self.namespace}}}
spec:
  selector: {{app: {self.name}}}
  ports: [{{name: http, port: 80, targetPort: http}}]
"""

    def scale(self, replicas: int) -> list[str]:
        self.cp.kubectl("apply", "-f", "-", input=self.manifest(replicas))
        pods = wait_for_pods(self.kube, self.namespace, f"app={self.name}", replicas)
        for pod in pods:
            if pod in self.hosts:
                continue
            host = self.net.create(f"{self.namespace}/{pod}")
            host.serve(8080, pod, self.net.log_dir)
            bind_and_run(self.kube, self.namespace, pod, host.address)
            self.hosts[pod] = host.address
        return pods
