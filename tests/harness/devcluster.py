"""`make dev-cluster`: start the test control plane, print a KUBECONFIG line,
and keep it running until Ctrl-C."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

from .controlplane import ROOT, start_control_plane
from .kube import Kube
from .kubelet import ensure_node


def main() -> None:
    workdir = Path(ROOT / ".cache" / "dev-cluster")
    cp = start_control_plane(workdir)
    ensure_node(Kube(cp.server, cp.ssl_context()))
    print(f"export KUBECONFIG={cp.kubeconfig} PATH={ROOT / '.cache' / 'bin'}:$PATH", flush=True)
    print(f"control plane at {cp.server}; logs in {cp.logs}; Ctrl-C stops it", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    cp.stop()


if __name__ == "__main__":
    main()
