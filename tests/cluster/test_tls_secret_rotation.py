"""TLS certificates through the API (`tls.source: api`) on the real
kube-apiserver: the proxy, running as its ServiceAccount with only the chart's
Role (resourceNames), serves a `kubernetes.io/tls` Secret, serves its rotated
version within a deadline after the Secret is replaced through the API, keeps
it when a broken version follows, and `kubectl auth can-i` shows the
ServiceAccount can read exactly the named Secrets and nothing else."""

from __future__ import annotations

import base64
import json
import time
import urllib.request
from pathlib import Path

import yaml

from tests.harness.controlplane import ControlPlane, free_port
from tests.harness.kube import Kube
from tests.harness.stack import BIN, poll, start_process
from tests.harness.tls_tools import TestCa, served_serial
from tests.helm.chart_support import docs_of, template
from tests.helm.test_chart import service_account_kubeconfig
from vocelio_contract.config import GatewayConfig

RELEASE = "tlsgw"
PROXY_SA = f"{RELEASE}-vocelio-gateway-proxy"
SECRET = "api-example-com-tls"
ROTATION_DEADLINE_S = 10.0


def _tls_secret(cert: bytes, key: bytes) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": SECRET},
            "data": {"tls.crt": base64.b64encode(cert).decode(), "tls.key": base64.b64encode(key).decode()}}


def _can_i(cp: ControlPlane, ns: str, *args: str) -> bool:
    result = cp.kubectl("auth", "can-i", *args, "-n", ns, f"--as=system:serviceaccount:{ns}:{PROXY_SA}",
                        check=False)
    return result.stdout.strip() == "yes"


def test_a_secret_rotated_through_the_api_is_served_within_the_deadline_with_least_privilege(
        control_plane: ControlPlane, kube: Kube, namespace: str, tmp_path: Path) -> None:
    ns, cp = namespace, control_plane
    # The chart's own RBAC for the api source, applied as rendered.
    rendered = docs_of(template("--set", "tls.enabled=true", "--set", "tls.source=api",
                                "--set", f"tls.secrets={{{SECRET}}}", namespace=ns, release=RELEASE))
    rbac = [d for d in rendered if d["kind"] in ("Role", "RoleBinding") and d["metadata"]["name"].endswith("proxy-tls")]
    assert [d["kind"] for d in rbac] == ["Role", "RoleBinding"]
    assert not [d for d in rendered if d["kind"] in ("ClusterRole", "ClusterRoleBinding")
                and any(s.get("name") == PROXY_SA for s in d.get("subjects", []))]
    kube.create(f"/api/v1/namespaces/{ns}/serviceaccounts",
                {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": PROXY_SA}})
    cp.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump_all(rbac))
    ca = TestCa()
    first, second = ca.issue("api.example.com"), ca.issue("api.example.com")
    kube.create(f"/api/v1/namespaces/{ns}/secrets", _tls_secret(first.cert_pem, first.key_pem))
    kube.create(f"/api/v1/namespaces/{ns}/secrets", {"apiVersion": "v1", "kind": "Secret",
                                                    "metadata": {"name": "unrelated"}, "stringData": {"k": "v"}})

    # Least privilege: exactly the named Secret, read-only, in this namespace only.
    for verb in ("get", "list", "watch"):
        assert _can_i(cp, ns, verb, f"secrets/{SECRET}"), verb
    for denied in (("get", "secrets/unrelated"), ("list", "secrets"), ("watch", "secrets"),
                   ("update", f"secrets/{SECRET}"), ("patch", f"secrets/{SECRET}"), ("delete", f"secrets/{SECRET}"),
                   ("create", "secrets"), ("get", "configmaps")):
        assert not _can_i(cp, ns, *denied), denied
    assert cp.kubectl("auth", "can-i", "get", f"secrets/{SECRET}", "-n", "default",
                      f"--as=system:serviceaccount:{ns}:{PROXY_SA}", check=False).stdout.strip() == "no"

    config = tmp_path / "gateway.json"
    config.write_text(GatewayConfig().seal().to_json())
    port, tls_port = free_port(), free_port()
    settings = tmp_path / "settings.yaml"
    settings.write_text(yaml.safe_dump({
        "host": "127.0.0.1", "port": port, "access_log": False, "shutdown_delay_s": 0,
        "tls": {"enabled": True, "port": tls_port, "source": "api",
                "certificates": [{"name": SECRET, "secret": f"{ns}/{SECRET}"}]}}))
    kubeconfig = service_account_kubeconfig(cp, ns, PROXY_SA, tmp_path / "proxy.kubeconfig")
    proc = start_process(cp, f"proxy-tls-{ns}", [str(BIN / "vocelio-proxy"), "serve", "--config", str(config),
                                                 "--settings", str(settings)],
                         env={"KUBECONFIG": str(kubeconfig)})
    try:
        ca_file = tmp_path / "ca.pem"
        ca_file.write_bytes(ca.ca_pem)
        poll("the proxy serves the Secret's certificate",
             lambda: served_serial(tls_port, "api.example.com", ca_file) == first.serial, 60)

        kube.merge_patch(f"/api/v1/namespaces/{ns}/secrets/{SECRET}", _tls_secret(second.cert_pem, second.key_pem))
        rotated_at = time.monotonic()
        poll("the rotated certificate served",
             lambda: served_serial(tls_port, "api.example.com", ca_file) == second.serial, ROTATION_DEADLINE_S)
        took = time.monotonic() - rotated_at
        assert took < ROTATION_DEADLINE_S

        # A broken version (a key of another certificate) keeps the rotated one.
        third = ca.issue("api.example.com")
        kube.merge_patch(f"/api/v1/namespaces/{ns}/secrets/{SECRET}", _tls_secret(third.cert_pem, second.key_pem))

        def refused() -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
                text = answer.read().decode()
            return (f'vocelio_tls_certificate_reloads_total{{certificate="{SECRET}",result="invalid"}} 1.0'
                    in text)

        poll("the broken version refused", refused, 30)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as answer:
            watchers = json.loads(answer.read())["config"]["watchers"]
        assert watchers[f"tls-secret:{ns}/{SECRET}"]["state"] == "running"
        assert served_serial(tls_port, "api.example.com", ca_file) == second.serial
        log = proc.tail()
        assert "forbidden" not in log.lower(), log
        assert "PRIVATE KEY" not in log
    finally:
        proc.stop()
