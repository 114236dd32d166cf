"""A real single-node Kubernetes cluster on this machine, for tests/node and
`make dev-cluster`: its own etcd, kube-apiserver, kube-controller-manager and
kube-scheduler, a real kubelet on containerd + runc, a CNI bridge with
host-local IPAM, kube-proxy (iptables) for ClusterIP Services, the locally
built pause image, and the project's images imported into containerd.

Fencing: the bridge carries 198.18.200.0/24 (pods; the host side .1 is also
where the API server listens, so pods reach it through the `kubernetes`
Service), ClusterIPs come from 198.19.128.0/17, the whole 198.18.0.0/15 keeps
its `unreachable` route, no masquerading is set up and the FORWARD chain rejects
anything from the bridge that is not for the bridge: no pod packet leaves the
machine. Everything is named `vgw*`/`vocelio-node` and removed by `stop()`;
leftovers of a crashed run are removed by the next `start()`.

The stand-in kubelet (tests/harness/kubelet.py) stays for tests that need many
pods cheaply; this node is for tests that need containers to really run."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .controlplane import BIN_DIR, CONTROLLERS, ROOT, ControlPlane, HarnessError, binary, free_port
from .node_images import BuiltImages, build_images, engine_env, find_engine
from .podnet import fence, others_running, unfence
from .waiting import poll

BRIDGE = "vgwnode0"
NODE_NAME = "vocelio-node"
HOST_IP = "198.18.200.1"
POD_CIDR = "198.18.200.0/24"
SERVICE_CIDR = "198.19.128.0/17"
KUBERNETES_SERVICE_IP = "198.19.128.1"
DNS_SERVICE_IP = "198.19.128.10"
CGROUP_ROOT = "vocelio-node"
MARKER_NETNS = f"vgw-{os.getpid()}-node"  # keeps podnet's unfence away while this node runs
CNI_BIN = Path("/usr/lib/cni")
NODE_CONTROLLERS = ",".join([CONTROLLERS, "horizontal-pod-autoscaler-controller", "disruption-controller",
                             "pod-garbage-collector-controller", "root-ca-certificate-publisher-controller",
                             "node-lifecycle-controller"])
PAUSE_DIR = ROOT / "tests" / "node" / "pause"
BACKEND_DIR = ROOT / "tests" / "node" / "backend"


class NodeUnavailable(HarnessError):
    """This machine cannot run a real node; the message says what is missing."""


def _run(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise HarnessError(f"{' '.join(args)}: {result.stderr.strip() or result.stdout.strip()}")
    return result


def preflight() -> str:
    """Empty when this machine can run the node, else what is missing (tests print it when they skip)."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root (containerd, kubelet and CNI need it)")
    for tool in ("containerd", "ctr", "runc", "iptables", "conntrack", "ip"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            missing.append(tool)
    for plugin in ("bridge", "host-local", "loopback"):
        if not (CNI_BIN / plugin).exists():
            missing.append(f"CNI plugin {plugin} (containernetworking-plugins)")
    if not shutil.which("go"):
        missing.append("go (builds the pause binary)")
    for built in ("kubelet", "coredns", "metrics-server", "prometheus-adapter"):
        if not (BIN_DIR / built).exists():
            missing.append(f"{BIN_DIR}/{built} (make cluster-bins)")
    if not Path("/sys/fs/cgroup/memory").is_dir() and not Path("/sys/fs/cgroup/cgroup.controllers").exists():
        missing.append("a cgroup filesystem")
    engine, why = find_engine()
    if engine is None:
        missing.append(f"a container engine to build the images ({why})")
    return "; ".join(missing)


def _cgroup_dirs() -> list[Path]:
    base = Path("/sys/fs/cgroup")
    if (base / "cgroup.controllers").exists():  # unified hierarchy
        return [base / CGROUP_ROOT]
    return [base / c / CGROUP_ROOT for c in ("cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio",
                                             "pids", "systemd") if (base / c).is_dir()]


def _kill_cgroup_tree() -> None:
    """Kill every process of the node's pods (containers outlive a stopped kubelet and containerd)."""
    for top in _cgroup_dirs():
        for root, _, files in os.walk(top):
            if "cgroup.procs" not in files:
                continue
            try:
                pids = (Path(root) / "cgroup.procs").read_text().split()
            except OSError:
                continue
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)


def _remove_cgroups() -> None:
    """Remove the node's cgroups deepest first; the tree may still shrink underneath (a dying pod)."""
    for top in _cgroup_dirs():
        dirs = [Path(root) for root, _, _ in os.walk(top)]  # os.walk skips what vanishes
        for child in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                child.rmdir()


def _make_cgroup_root() -> None:
    for path in _cgroup_dirs():
        path.mkdir(exist_ok=True)
        if path.parent.name == "cpuset":
            # A new cpuset cgroup starts empty; children (kubepods, pods) copy it.
            for knob in ("cpuset.cpus", "cpuset.mems"):
                (path / knob).write_text((path.parent / knob).read_text())


def _unmount_under(folder: Path) -> None:
    mounts = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        target = line.split()[1].encode().decode("unicode_escape")
        if target.startswith(str(folder) + "/"):
            mounts.append(target)
    for target in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", target], capture_output=True)


def _forward_rule(action: str) -> subprocess.CompletedProcess[str]:
    # Pods may talk to each other and to the host (INPUT); anything routed elsewhere is dropped.
    # REJECT, not DROP: a pod's attempt fails at once and visibly (tests check it) instead of timing out.
    return _run("iptables", action, "FORWARD", "-i", BRIDGE, "!", "-o", BRIDGE, "-m", "comment", "--comment",
                "vocelio-node fence", "-j", "REJECT", "--reject-with", "icmp-net-prohibited", check=False)


def cleanup_network() -> None:
    while _forward_rule("-D").returncode == 0:
        pass
    for table in ("nat", "filter", "mangle"):  # the kubelet's canary chains
        _run("iptables", "-t", table, "-X", "KUBE-KUBELET-CANARY", check=False)
    _run("ip", "link", "delete", BRIDGE, check=False)
    for line in _run("ip", "netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.strip() else ""
        if name.endswith("-node") and name.startswith("vgw-"):
            pid = name.split("-")[1]
            if not Path(f"/proc/{pid}").exists() or int(pid) == os.getpid():
                _run("ip", "netns", "delete", name, check=False)


def _dns_query(server: str, name: str, timeout: float = 1.0) -> str:
    """One A query over UDP; the first answer's address, or "" (a minimal client: no resolver library here)."""
    query = struct.pack(">HHHHHH", 0x5647, 0x0100, 1, 0, 0, 0)
    query += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack(">HH", 1, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(query, (server, 53))
        reply = sock.recv(2048)
    if len(reply) < 12 or struct.unpack(">H", reply[6:8])[0] == 0:
        return ""
    offset = len(query)  # the question is echoed; answers follow
    while offset + 12 <= len(reply):
        offset += 2 if reply[offset] & 0xC0 == 0xC0 else reply.index(b"\0", offset) + 1 - offset
        rtype, _, _, length = struct.unpack(">HHIH", reply[offset:offset + 10])
        offset += 10
        if rtype == 1 and length == 4:
            return socket.inet_ntoa(reply[offset:offset + 4])
        offset += length
    return ""


def _answers_safely(check: Callable[[], bool]) -> bool:
    try:
        return check()
    except (OSError, ValueError, struct.error):
        return False


@dataclass
class NodeControlPlane(ControlPlane):
    """The control plane of the real node: the API server listens on the bridge's host address (pods reach it
    through the `kubernetes` Service) and publishes itself there; the controller manager also runs the HPA."""

    @property
    def server(self) -> str:
        return f"https://{HOST_IP}:{self.api_port}"

    def serving_names(self) -> list[str]:
        # Pods reach the API server by its Service name and ClusterIP, and the kubelet by the host IP.
        return [HOST_IP, "127.0.0.1", "localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local", KUBERNETES_SERVICE_IP]

    def start_apiserver(self) -> None:
        assert self.pki is not None
        if not self.api_port:
            self.api_port = free_port()
        p = self.pki
        self._spawn("kube-apiserver", [
            f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
            f"--secure-port={self.api_port}", f"--bind-address={HOST_IP}", f"--advertise-address={HOST_IP}",
            "--authorization-mode=Node,RBAC", f"--client-ca-file={p.ca_cert}",
            f"--tls-cert-file={p.serving_cert}", f"--tls-private-key-file={p.serving_key}",
            f"--service-account-key-file={p.sa_pub}", f"--service-account-signing-key-file={p.sa_key}",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--kubelet-client-certificate={p.admin_cert}", f"--kubelet-client-key={p.admin_key}",
            "--kubelet-preferred-address-types=InternalIP",
            f"--requestheader-client-ca-file={p.ca_cert}", "--requestheader-allowed-names=vocelio-admin",
            "--requestheader-username-headers=X-Remote-User", "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={p.admin_cert}", f"--proxy-client-key-file={p.admin_key}",
            "--enable-aggregator-routing=true",
            "--v=1",
        ])
        ctx = self.ssl_context()

        def ready() -> bool:
            with urllib.request.urlopen(f"{self.server}/readyz", context=ctx, timeout=2) as resp:
                return bool(resp.status == 200)

        self._wait("kube-apiserver", ready, 90)

    def start_controller_manager(self) -> None:
        assert self.pki is not None
        self._spawn("kube-controller-manager", [
            f"--kubeconfig={self.kubeconfig}", f"--authentication-kubeconfig={self.kubeconfig}",
            f"--authorization-kubeconfig={self.kubeconfig}",
            f"--controllers={NODE_CONTROLLERS}", "--leader-elect=false",
            f"--service-account-private-key-file={self.pki.sa_key}", f"--root-ca-file={self.pki.ca_cert}",
            "--use-service-account-credentials=false", f"--secure-port={free_port()}",
            "--bind-address=127.0.0.1", "--endpointslice-updates-batch-period=0s",
            # The HPA reads metrics every 15 s by default; 5 s keeps the scaling test short, and the
            # scale-down window is the chart's own `behavior` (what users get).
            "--horizontal-pod-autoscaler-sync-period=5s",
        ])

    def stop(self) -> None:
        for name in ("prometheus-adapter", "prometheus", "coredns", "kube-proxy", "kube-scheduler", "kubelet",
                     "metrics-server"):
            self._stop(name)
        super().stop()


@dataclass
class RealNode:
    workdir: Path
    cp: NodeControlPlane = field(init=False)
    images: BuiltImages | None = None
    containerd: subprocess.Popen[bytes] | None = None
    kubelet_port: int = 0
    sysctls: dict[str, str] = field(default_factory=dict)
    _discovery: threading.Thread | None = None
    _stop_discovery: threading.Event = field(default_factory=threading.Event)
    timings: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.cp = NodeControlPlane(self.workdir / "cp")

    @property
    def sock(self) -> Path:
        return self.workdir / "containerd" / "containerd.sock"

    def _timed(self, what: str, step: Callable[[], None]) -> None:
        start = time.monotonic()
        step()
        self.timings[what] = round(time.monotonic() - start, 1)

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        missing = preflight()
        if missing:
            raise NodeUnavailable(f"this machine cannot run the real node: {missing}")
        self.cleanup_leftovers()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._timed("images", self.build_images)
        self._timed("network", self.start_network)
        self._timed("control plane", self.cp.start)
        self._timed("containerd", self.start_containerd)
        self._timed("kubelet", self.start_kubelet)
        self._timed("scheduler and kube-proxy", self.start_scheduler_and_proxy)
        self._timed("cluster DNS", self.start_dns)

    def stop(self) -> None:
        self._stop_discovery.set()
        if self._discovery is not None:
            self._discovery.join(timeout=30)
        self.cp.stop()
        _kill_cgroup_tree()
        if self.containerd is not None and self.containerd.poll() is None:
            os.killpg(self.containerd.pid, signal.SIGTERM)
            try:
                self.containerd.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.containerd.pid, signal.SIGKILL)
        self._kill_shims()
        _kill_cgroup_tree()
        _unmount_under(self.workdir)
        _remove_cgroups()
        subprocess.run([str(binary("kube-proxy")), "--cleanup"], capture_output=True, timeout=60)
        cleanup_network()
        for knob, value in self.sysctls.items():
            with contextlib.suppress(OSError):
                (Path("/proc/sys") / knob).write_text(value)
        if not others_running():
            unfence()

    def cleanup_leftovers(self) -> None:
        """What a crashed run left: pod processes, shims, mounts, cgroups, the bridge, iptables rules."""
        _kill_cgroup_tree()
        self._kill_shims(any_run=True)
        _unmount_under(Path(tempfile.gettempdir()))  # only vocelio-node-* folders mount anything under /tmp
        _remove_cgroups()
        cleanup_network()

    def _kill_shims(self, any_run: bool = False) -> None:
        """Kill this node's containerd shims, or (any_run) every process a crashed node run left behind:
        only one node runs on a machine (the bridge name is fixed), so anything under a node folder is stale."""
        marker = f"{tempfile.gettempdir()}/vocelio-node-" if any_run else str(self.sock)
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) == os.getpid():
                continue
            try:
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if marker in cmd and (any_run or "containerd-shim" in cmd):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(proc.name), signal.SIGKILL)

    # -- steps -------------------------------------------------------------------------------------

    def build_images(self) -> None:
        engine, why = find_engine()
        if engine is None:
            raise NodeUnavailable(why)
        context = ROOT / ".cache" / "node-images" / "pause-context"
        context.mkdir(parents=True, exist_ok=True)
        binary_path = context / "pause"
        build = subprocess.run(["go", "build", "-trimpath", "-ldflags=-s -w", "-o", str(binary_path), "."],
                               cwd=PAUSE_DIR, capture_output=True, text=True, timeout=300,
                               env={**os.environ, "CGO_ENABLED": "0", "GOWORK": "off", "GOFLAGS": "-mod=mod"})
        if build.returncode != 0:
            raise HarnessError(f"pause build failed: {build.stderr}")
        shutil.copy(PAUSE_DIR / "Dockerfile", context / "Dockerfile")
        self.images = build_images(engine, {"pause": (context / "Dockerfile", context),
                                            "backend": (BACKEND_DIR / "Dockerfile", BACKEND_DIR)})

    def start_network(self) -> None:
        fence()
        _run("ip", "netns", "add", MARKER_NETNS, check=False)
        _run("ip", "link", "add", BRIDGE, "type", "bridge")
        _run("ip", "addr", "add", f"{HOST_IP}/24", "dev", BRIDGE)
        _run("ip", "link", "set", BRIDGE, "up")
        # ClusterIPs need a route before kube-proxy's DNAT: the fence would refuse them first.
        _run("ip", "route", "add", SERVICE_CIDR, "dev", BRIDGE, "src", HOST_IP)
        _forward_rule("-I")
        # Pod-to-ClusterIP-to-pod on one bridge: bridged packets must pass iptables for kube-proxy's NAT.
        # The host's values come back on stop.
        for knob, value in (("net/bridge/bridge-nf-call-iptables", "1"), ("net/ipv4/ip_forward", "1")):
            path = Path("/proc/sys") / knob
            if path.exists():
                self.sysctls.setdefault(knob, path.read_text().strip())
                path.write_text(value)
        cni = self.workdir / "cni"
        cni.mkdir(parents=True, exist_ok=True)
        (cni / "10-vocelio.conflist").write_text(f"""{{
  "cniVersion": "0.4.0",
  "name": "vocelio-node",
  "plugins": [
    {{"type": "bridge", "bridge": "{BRIDGE}", "isGateway": true, "ipMasq": false, "hairpinMode": true,
      "ipam": {{"type": "host-local", "dataDir": "{self.workdir / 'cni-ipam'}",
               "ranges": [[{{"subnet": "{POD_CIDR}", "rangeStart": "198.18.200.10",
                            "rangeEnd": "198.18.200.250", "gateway": "{HOST_IP}"}}]],
               "routes": [{{"dst": "0.0.0.0/0"}}]}}}},
    {{"type": "portmap", "capabilities": {{"portMappings": true}}}}
  ]
}}
""")

    def start_containerd(self) -> None:
        base = self.workdir / "containerd"
        base.mkdir(parents=True, exist_ok=True)
        assert self.images is not None
        pause = self.images.ref("pause")
        config = base / "config.toml"
        config.write_text(f"""version = 2
root = "{base / 'root'}"
state = "{base / 'state'}"
[grpc]
  address = "{self.sock}"
[ttrpc]
  address = "{self.sock}.ttrpc"
[debug]
  level = "warn"
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  restrict_oom_score_adj = true
  disable_apparmor = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "{shutil.which('runc') or '/usr/sbin/runc'}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{self.workdir / 'cni'}"
""")
        log = (self.cp.logs / "containerd.log")
        log.parent.mkdir(parents=True, exist_ok=True)
        self.containerd = subprocess.Popen(["containerd", "--config", str(config)], stdout=log.open("ab"),
                                           stderr=subprocess.STDOUT, start_new_session=True)

        def up() -> bool:
            if self.containerd is not None and self.containerd.poll() is not None:
                raise HarnessError(f"containerd exited:\n{log.read_text()[-3000:]}")
            return self.ctr("version", check=False).returncode == 0

        poll("containerd", up, 60, interval=0.2)
        for _name, archive in self.images.archives.items():
            self.ctr("images", "import", str(archive), timeout=300)

    def ctr(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return _run("ctr", "--address", str(self.sock), "--namespace", "k8s.io", *args, check=check,
                    timeout=timeout)

    def start_kubelet(self) -> None:
        cp = self.cp
        assert cp.pki is not None
        _make_cgroup_root()
        kdir = self.workdir / "kubelet"
        kdir.mkdir(parents=True, exist_ok=True)
        self.kubelet_port = free_port()
        config = kdir / "config.yaml"
        config.write_text(f"""apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# cgroup v1 hosts: kubelet v1.35+ refuses them unless told otherwise; cgroupfs as containerd uses it.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /{CGROUP_ROOT}
containerRuntimeEndpoint: unix://{self.sock}
address: {HOST_IP}
port: {self.kubelet_port}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: {free_port()}
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: true}}
  x509: {{clientCAFile: {cp.pki.ca_cert}}}
authorization:
  mode: Webhook
clusterDomain: cluster.local
clusterDNS: [{DNS_SERVICE_IP}]
failSwapOn: false
maxPods: 40
serializeImagePulls: false
registerNode: true
# This machine's disk is shared: evict only when it is truly full.
evictionHard: {{memory.available: "100Mi", nodefs.available: "2%", imagefs.available: "2%"}}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
localStorageCapacityIsolation: false
protectKernelDefaults: false
enforceNodeAllocatable: ["pods"]
""")
        cp._spawn("kubelet", [
            f"--config={config}", f"--kubeconfig={cp.kubeconfig}", f"--root-dir={kdir / 'root'}",
            f"--hostname-override={NODE_NAME}", f"--node-ip={HOST_IP}", "--v=1",
        ])

        def ready() -> bool:
            result = cp.kubectl("get", "node", NODE_NAME, "-o",
                                "jsonpath={.status.conditions[?(@.type=='Ready')].status}", check=False)
            return result.stdout.strip() == "True"

        cp._wait("the node Ready", ready, 120)

    def start_scheduler_and_proxy(self) -> None:
        cp = self.cp
        cp._spawn("kube-scheduler", [
            f"--kubeconfig={cp.kubeconfig}", f"--authentication-kubeconfig={cp.kubeconfig}",
            f"--authorization-kubeconfig={cp.kubeconfig}", "--leader-elect=false",
            "--bind-address=127.0.0.1", f"--secure-port={free_port()}",
        ])
        config = self.workdir / "kube-proxy.yaml"
        config.write_text(f"""apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection: {{kubeconfig: {cp.kubeconfig}}}
hostnameOverride: {NODE_NAME}
clusterCIDR: {POD_CIDR}
bindAddress: 127.0.0.1
healthzBindAddress: 127.0.0.1:{free_port()}
metricsBindAddress: 127.0.0.1:{free_port()}
# Leave the host's conntrack sysctls alone (not writable here, and not ours to change).
conntrack: {{maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}}
iptables: {{masqueradeAll: false, syncPeriod: 5s, minSyncPeriod: 0s}}
""")
        cp._spawn("kube-proxy", [f"--config={config}", "--v=1"])

        def kubernetes_service_answers() -> bool:
            ctx = ssl.create_default_context(cafile=str(cp.pki.ca_cert if cp.pki else ""))
            with urllib.request.urlopen(f"https://{KUBERNETES_SERVICE_IP}/readyz", context=ctx, timeout=2):
                return True

        # kube-proxy has programmed the `kubernetes` Service: the path pods take to the API server works.
        cp._wait("the kubernetes Service through kube-proxy", lambda: self._answers(kubernetes_service_answers), 60)

    @staticmethod
    def _answers(check: Callable[[], bool]) -> bool:
        try:
            return check()
        except urllib.error.HTTPError as exc:  # 401/403 still proves the path
            return exc.code in (401, 403)

    def start_dns(self) -> None:
        """CoreDNS (built from its module) on the bridge's host address, serving only cluster.local from the API
        (no upstream: names outside the cluster do not resolve, nothing leaves the machine), published as the
        kube-dns Service the kubelet writes into every pod's resolv.conf. Operators (kopf) and clients that use
        `kubernetes.default.svc` need it."""
        cp = self.cp
        port = free_port()
        corefile = self.workdir / "Corefile"
        corefile.write_text(f""".:{port} {{
    bind {HOST_IP}
    errors
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        kubeconfig {cp.kubeconfig}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    cache 5
}}
""")
        cp._spawn("coredns", ["-conf", str(corefile)])
        labels = {"kubernetes.io/service-name": "kube-dns"}
        ports = [{"name": "dns", "port": port, "protocol": "UDP"}, {"name": "dns-tcp", "port": port, "protocol": "TCP"}]
        manifests = [
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "kube-dns", "namespace": "kube-system"},
             "spec": {"clusterIP": DNS_SERVICE_IP, "ports": [
                 {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": port},
                 {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": port}]}},
            {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
             "metadata": {"name": "kube-dns-host", "namespace": "kube-system", "labels": labels},
             "addressType": "IPv4", "endpoints": [{"addresses": [HOST_IP], "conditions": {"ready": True}}],
             "ports": ports},
        ]
        cp.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests}))

        def answers() -> bool:
            return _dns_query(DNS_SERVICE_IP, "kubernetes.default.svc.cluster.local") == KUBERNETES_SERVICE_IP

        cp._wait("cluster DNS answering through the kube-dns Service", lambda: _answers_safely(answers), 60)

    def _write_targets(self, path: Path) -> None:
        out = self.cp.kubectl("get", "pods", "-A", "-o", "json", check=False).stdout
        groups = []
        for pod in json.loads(out or '{"items": []}')["items"]:
            ip = pod.get("status", {}).get("podIP")
            if not ip or pod["status"].get("phase") != "Running":
                continue
            for container in pod["spec"]["containers"]:
                for port in container.get("ports", []):
                    if port.get("name") == "admin":
                        groups.append({"targets": [f"{ip}:{port['containerPort']}"],
                                       "labels": {"namespace": pod["metadata"]["namespace"],
                                                  "pod": pod["metadata"]["name"]}})
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(groups))
        tmp.replace(path)

    def _discover(self, path: Path) -> None:
        while not self._stop_discovery.wait(2):
            with contextlib.suppress(HarnessError, OSError, ValueError, subprocess.TimeoutExpired):
                self._write_targets(path)

    def start_metrics_server(self) -> None:
        """metrics-server (built from its module by `make cluster-bins`) as a host process on the bridge address,
        registered as the aggregated v1beta1.metrics.k8s.io API through a selector-less Service."""
        cp = self.cp
        port = free_port()
        certs = self.workdir / "metrics-server"
        certs.mkdir(parents=True, exist_ok=True)
        cp._spawn("metrics-server", [
            f"--kubeconfig={cp.kubeconfig}", f"--authentication-kubeconfig={cp.kubeconfig}",
            f"--authorization-kubeconfig={cp.kubeconfig}", f"--secure-port={port}", f"--bind-address={HOST_IP}",
            f"--cert-dir={certs}", "--kubelet-preferred-address-types=InternalIP", "--kubelet-use-node-status-port",
            # The kubelet serves a self-signed certificate (no serving-cert rotation on this node).
            "--kubelet-insecure-tls", "--metric-resolution=15s", "--kubelet-request-timeout=5s",
        ])
        self._register_host_api("metrics-server", "metrics.k8s.io", "v1beta1", port)

        def serves_node_metrics() -> bool:
            return cp.kubectl("get", "--raw", f"/apis/metrics.k8s.io/v1beta1/nodes/{NODE_NAME}",
                              check=False).returncode == 0

        cp._wait("metrics-server serving node metrics", serves_node_metrics, 120)

    def _register_host_api(self, name: str, group: str, version: str, port: int) -> None:
        """Serve an aggregated API from a host process: a selector-less Service in kube-system whose endpoint is
        the bridge's host address, and the APIService that points at it."""
        labels = {"kubernetes.io/service-name": name}
        manifests = [
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "kube-system"},
             "spec": {"ports": [{"name": "https", "port": 443, "targetPort": port}]}},
            {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
             "metadata": {"name": f"{name}-host", "namespace": "kube-system", "labels": labels},
             "addressType": "IPv4", "endpoints": [{"addresses": [HOST_IP], "conditions": {"ready": True}}],
             "ports": [{"name": "https", "port": port, "protocol": "TCP"}]},
            {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": name, "namespace": "kube-system"},
             "subsets": [{"addresses": [{"ip": HOST_IP}], "ports": [{"name": "https", "port": port}]}]},
            {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
             "metadata": {"name": f"{version}.{group}"},
             "spec": {"service": {"name": name, "namespace": "kube-system", "port": 443},
                      "group": group, "version": version, "insecureSkipTLSVerify": True,
                      "groupPriorityMinimum": 100, "versionPriority": 100}},
        ]
        self.cp.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests}))

    def start_custom_metrics(self, rules: str) -> None:
        """Prometheus (Debian's package) scraping every pod's `admin` port through Kubernetes service discovery,
        and prometheus-adapter (built from its module) serving `rules` as custom.metrics.k8s.io: the path the
        README documents for the proxy's in-flight metric."""
        cp = self.cp
        prometheus = shutil.which("prometheus") or "/usr/bin/prometheus"
        if not Path(prometheus).exists():
            raise NodeUnavailable("prometheus is missing (apt-get install prometheus)")
        pdir = self.workdir / "prometheus"
        pdir.mkdir(parents=True, exist_ok=True)
        prom_port = free_port()
        # Debian's Prometheus is built without Kubernetes service discovery: the harness discovers the pods
        # (every container port named `admin`, the proxy's metrics port) into a file_sd file instead.
        targets = pdir / "targets.json"
        self._write_targets(targets)
        (pdir / "prometheus.yml").write_text(f"""global: {{scrape_interval: 5s, evaluation_interval: 5s}}
scrape_configs:
  - job_name: pods
    file_sd_configs: [{{files: ["{targets}"], refresh_interval: 5s}}]
""")
        self._discovery = threading.Thread(target=self._discover, args=(targets,), name="pod-discovery", daemon=True)
        self._discovery.start()
        cp.procs["prometheus"] = subprocess.Popen(
            [prometheus, f"--config.file={pdir / 'prometheus.yml'}", f"--storage.tsdb.path={pdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
            stdout=(cp.logs / "prometheus.log").open("ab"), stderr=subprocess.STDOUT, start_new_session=True)
        cp._wait("prometheus", lambda: urllib.request.urlopen(
            f"http://127.0.0.1:{prom_port}/-/ready", timeout=1).status == 200, 60)
        (pdir / "adapter.yaml").write_text(rules)
        port = free_port()
        cp._spawn("prometheus-adapter", [
            f"--prometheus-url=http://127.0.0.1:{prom_port}/", f"--config={pdir / 'adapter.yaml'}",
            f"--lister-kubeconfig={cp.kubeconfig}", f"--authentication-kubeconfig={cp.kubeconfig}",
            f"--authorization-kubeconfig={cp.kubeconfig}", f"--secure-port={port}", f"--bind-address={HOST_IP}",
            f"--cert-dir={pdir / 'certs'}", "--metrics-relist-interval=10s", "--v=1",
        ])
        self._register_host_api("prometheus-adapter", "custom.metrics.k8s.io", "v1beta1", port)
        self._register_host_api("prometheus-adapter", "custom.metrics.k8s.io", "v1beta2", port)

        def discovered() -> bool:
            return cp.kubectl("get", "--raw", "/apis/custom.metrics.k8s.io/v1beta1", check=False).returncode == 0

        cp._wait("prometheus-adapter serving custom.metrics.k8s.io", discovered, 120)

    # -- helpers for tests -------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        return {**self.cp.env(), **engine_env()}

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return self.cp.kubectl(*args, input=input, check=check, timeout=timeout)

    def helm(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([str(binary("helm")), *args], capture_output=True, text=True, env=self.env(),
                                timeout=timeout, cwd=ROOT)
        if check and result.returncode != 0:
            raise HarnessError(f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result


def start_node(workdir: Path | None = None) -> RealNode:
    node = RealNode(workdir or Path(tempfile.mkdtemp(prefix="vocelio-node-")))
    try:
        node.start()
    except BaseException:
        node.stop()
        raise
    return node
