"""Standalone mode (`make run`) serves HTTPS on a second port with a
development certificate it generates once under a cache directory, prints
the https URL, and reuses the certificate on the next start."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import urllib.request
from pathlib import Path

from tests.harness.controlplane import ROOT, free_port
from tests.harness.waiting import poll
from vocelio_operator.local.devcert import ensure_dev_certificate

BIN = Path(sys.executable).parent


def _env() -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("VOCELIO_")}
    out["PYTHONPATH"] = os.pathsep.join([str(ROOT / top) for top in ("contract", "proxy", "operator")] + [str(ROOT)])
    out["VOCELIO_SHUTDOWN_DELAY_S"] = "0"
    return out


def test_standalone_serves_https_with_a_generated_certificate_and_prints_the_url(tmp_path: Path) -> None:
    port, https_port = free_port(), free_port()
    certs = tmp_path / "dev-tls"
    args = [str(BIN / "vocelio-gateway"), "standalone", "--resources", str(ROOT / "examples/resources"),
            "--demo-backends", "--port", str(port), "--https-port", str(https_port),
            "--dev-cert-dir", str(certs), "--no-access-log"]
    proc = subprocess.Popen(args, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def https_health() -> bool:
            ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
            for host in ("localhost", "127.0.0.1"):
                with urllib.request.urlopen(f"https://{host}:{https_port}/health", timeout=3,
                                            context=ctx) as answer:
                    if answer.status != 200:
                        return False
            return True

        poll("standalone answers over https with its development certificate", https_health, deadline_s=60,
             errors=(OSError, ssl.SSLError))
    finally:
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    assert f"https://localhost:{https_port}" in stdout
    assert f"--cacert {certs / 'ca.pem'}" in stdout
    assert "Traceback" not in stderr
    assert oct((certs / "tls.key").stat().st_mode & 0o777) == "0o600"
    assert oct(certs.stat().st_mode & 0o777) == "0o700"
    again = ensure_dev_certificate(certs)
    assert not again.created, "a valid development certificate was made again"


def test_a_development_certificate_close_to_expiry_is_replaced(tmp_path: Path) -> None:
    first = ensure_dev_certificate(tmp_path)
    assert first.created
    (tmp_path / "tls.crt").write_bytes(b"broken")
    assert ensure_dev_certificate(tmp_path).created
