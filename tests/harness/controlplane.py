"""Starts and stops the test control plane: etcd, kube-apiserver (RBAC, client
certificates, service-account keys) and kube-controller-manager with the
controllers the tests need, on free loopback ports, each in its own process
group. Logs stay in the run folder; a failed run keeps them."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .pki import Pki, write_pki
from .waiting import poll

ROOT = Path(__file__).resolve().parents[2]
BIN_DIR = Path(os.environ.get("VOCELIO_BIN_DIR", ROOT / ".cache" / "bin"))
#: The fenced test address range (RFC 2544 benchmarking space): pods get
#: addresses here, Services get ClusterIPs here; nothing in it leaves the machine.
TEST_RANGE = "198.18.0.0/15"
SERVICE_RANGE = "198.19.0.0/16"
ADVERTISE_ADDRESS = "198.18.255.254"
CONTROLLERS = ",".join([
    "endpointslice-controller", "endpoints-controller", "deployment-controller", "replicaset-controller",
    "garbage-collector-controller", "namespace-controller", "serviceaccount-controller",
    "serviceaccount-token-controller",
])


class HarnessError(RuntimeError):
    pass


def binary(name: str) -> Path:
    path = BIN_DIR / name
    if not path.exists():
        raise HarnessError(f"{path} is missing: run `make cluster-bins` (builds the control plane from Go modules)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class ControlPlane:
    workdir: Path
    pki: Pki | None = None
    api_port: int = 0
    etcd_port: int = 0
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "admin.kubeconfig"

    @property
    def logs(self) -> Path:
        return self.workdir / "logs"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["PATH"] = f"{BIN_DIR}:{env.get('PATH', '')}"
        return env

    def ssl_context(self) -> ssl.SSLContext:
        assert self.pki is not None
        ctx = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        ctx.load_cert_chain(str(self.pki.admin_cert), str(self.pki.admin_key))
        return ctx

    def _spawn(self, name: str, args: list[str]) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = (self.logs / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen([str(binary(name)), *args], stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True, cwd=self.workdir)

    def _wait(self, what: str, check: Callable[[], bool], deadline_s: float) -> None:
        def ready() -> bool:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    tail = (self.logs / f"{name}.log").read_text(errors="replace")[-3000:]
                    raise HarnessError(f"{name} exited with {proc.returncode}:\n{tail}")
            return check()

        # Connection and TLS errors mean the component is still starting.
        poll(what, ready, deadline_s, interval=0.2, errors=(OSError, ssl.SSLError, urllib.error.URLError))

    def serving_names(self) -> list[str]:
        """Names and addresses the API server's certificate is valid for."""
        return ["127.0.0.1", "localhost", "kubernetes", "kubernetes.default.svc", ADVERTISE_ADDRESS]

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.pki = write_pki(self.workdir / "pki", self.serving_names())
        self.etcd_port, peer = free_port(), free_port()
        self._spawn("etcd", [
            "--name=default", f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{self.etcd_port}",
            f"--advertise-client-urls=http://127.0.0.1:{self.etcd_port}",
            f"--listen-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-cluster=default=http://127.0.0.1:{peer}",
            "--log-level=warn", "--quota-backend-bytes=2147483648",
            "--unsafe-no-fsync",
        ])
        self._wait("etcd", lambda: urllib.request.urlopen(
            f"http://127.0.0.1:{self.etcd_port}/health", timeout=1).status == 200, 30)
        self.start_apiserver()
        self.write_kubeconfig()
        self.start_controller_manager()

    def start_apiserver(self) -> None:
        assert self.pki is not None
        if not self.api_port:
            self.api_port = free_port()
        p = self.pki
        self._spawn("kube-apiserver", [
            f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
            f"--secure-port={self.api_port}", "--bind-address=127.0.0.1",
            f"--advertise-address={ADVERTISE_ADDRESS}", "--endpoint-reconciler-type=none",
            "--authorization-mode=RBAC", f"--client-ca-file={p.ca_cert}",
            f"--tls-cert-file={p.serving_cert}", f"--tls-private-key-file={p.serving_key}",
            f"--service-account-key-file={p.sa_pub}", f"--service-account-signing-key-file={p.sa_key}",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-cluster-ip-range={SERVICE_RANGE}",
            "--enable-priority-and-fairness=false",
            "--v=1",
        ])
        ctx = self.ssl_context()

        def ready() -> bool:
            with urllib.request.urlopen(f"{self.server}/readyz", context=ctx, timeout=2) as resp:
                return bool(resp.status == 200)

        self._wait("kube-apiserver", ready, 90)

    def stop_apiserver(self) -> None:
        self._stop("kube-apiserver")

    def start_controller_manager(self) -> None:
        assert self.pki is not None
        self._spawn("kube-controller-manager", [
            f"--kubeconfig={self.kubeconfig}", f"--authentication-kubeconfig={self.kubeconfig}",
            f"--authorization-kubeconfig={self.kubeconfig}",
            f"--controllers={CONTROLLERS}", "--leader-elect=false",
            f"--service-account-private-key-file={self.pki.sa_key}", f"--root-ca-file={self.pki.ca_cert}",
            "--use-service-account-credentials=false", f"--secure-port={free_port()}",
            "--bind-address=127.0.0.1", "--concurrent-endpoint-syncs=10", "--concurrent-service-endpoint-syncs=10",
            "--endpointslice-updates-batch-period=0s",
        ])

    def write_kubeconfig(self) -> None:
        assert self.pki is not None
        self.kubeconfig.write_text(f"""apiVersion: v1
kind: Config
clusters:
- name: vocelio-test
  cluster:
    server: {self.server}
    certificate-authority: {self.pki.ca_cert}
users:
- name: admin
  user:
    client-certificate: {self.pki.admin_cert}
    client-key: {self.pki.admin_key}
contexts:
- name: vocelio-test
  context: {{cluster: vocelio-test, user: admin, namespace: default}}
current-context: vocelio-test
""")

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 60) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([str(binary("kubectl")), *args], input=input, capture_output=True, text=True,
                                env=self.env(), timeout=timeout)
        if check and result.returncode != 0:
            raise HarnessError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    def _stop(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)

    def stop(self) -> None:
        for name in ("kube-controller-manager", "kube-apiserver", "etcd"):
            self._stop(name)


def start_control_plane(keep_dir: Path | None = None) -> ControlPlane:
    workdir = keep_dir or Path(tempfile.mkdtemp(prefix="vocelio-cp-"))
    cp = ControlPlane(workdir)
    try:
        cp.start()
    except Exception:
        cp.stop()
        raise
    return cp


def remove_workdir(cp: ControlPlane) -> None:
    shutil.rmtree(cp.workdir, ignore_errors=True)
