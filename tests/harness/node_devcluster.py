"""`make dev-cluster`: the real single-node cluster (tests/harness/node.py)
for users, with the locally built images imported into its containerd and
metrics-server serving CPU to the HPA. Prints the KUBECONFIG line and the
`helm install` command for the built images; Ctrl-C stops and cleans up."""

from __future__ import annotations

import signal
import tempfile
import threading
from pathlib import Path

from .controlplane import BIN_DIR, ROOT
from .node import HOST_IP, NodeUnavailable, start_node


def main() -> None:
    workdir = Path(tempfile.gettempdir()) / "vocelio-node-dev"
    print("dev-cluster: starting a real node (containerd + kubelet; about a minute once images are built)",
          flush=True)
    try:
        node = start_node(workdir)
    except NodeUnavailable as exc:
        raise SystemExit(f"dev-cluster: {exc}") from None
    node.start_metrics_server()
    assert node.images is not None
    chart = ROOT / "charts" / "vocelio-gateway"
    print(f"dev-cluster: up in {sum(node.timings.values()):.0f}s ({node.timings})", flush=True)
    print(f"export KUBECONFIG={node.cp.kubeconfig} PATH={BIN_DIR}:$PATH", flush=True)
    print("install the chart with the images built from this checkout:", flush=True)
    print(f"  helm install vocelio {chart} -n vocelio-system --create-namespace \\\n"
          f"    -f {chart}/values-development.yaml --set redis.inChart=false \\\n"
          f"    --set image.repository=localhost/vocelio --set image.tag={node.images.tag} "
          "--set image.pullPolicy=Never", flush=True)
    print(f"pods get 198.18.200.0/24, Services 198.19.128.0/17; the API server listens on {HOST_IP}; "
          f"logs in {node.cp.logs}; Ctrl-C stops it", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    print("dev-cluster: stopping and cleaning up", flush=True)
    node.stop()


if __name__ == "__main__":
    main()
