"""helm never upgrades crds/: the shipped commands do (`make crds-apply`, and `vocelio-gateway crds`
piped to `kubectl apply --server-side`). On the real control plane, an older CRD (another short
name, a narrower schema, a missing printer column) is upgraded in place by each command, and the
custom resources created under the old one survive. Short names never clash with widely installed
CRDs (Istio's `vs`, Knative's `rt`, ...)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness.controlplane import BIN_DIR, ROOT, ControlPlane
from tests.harness.kube import Kube
from tests.harness.stack import install_crds

CRD = "ratetiers.gateway.vocelio.ai"
# Short names of popular CRDs and built-ins a cluster is likely to have (Istio, Knative, Argo,
# cert-manager, Gateway API, core): ours must not shadow any of them in `kubectl get`.
TAKEN = {"vs", "gw", "dr", "se", "pa", "ra", "rt", "ksvc", "kcfg", "rev", "route", "cfg", "app", "apps",
         "cert", "certs", "cr", "crs", "svc", "po", "deploy", "ing", "ep", "cm", "ns", "sa", "hpa", "pdb",
         "netpol", "rs", "ds", "sts", "pv", "pvc", "no", "ev", "gtw", "httproute", "vsvc-"}


def crd_docs(folder: Path) -> dict[str, dict[str, Any]]:
    return {p.name: yaml.safe_load(p.read_text()) for p in sorted(folder.glob("*.yaml"))}


def test_short_names_do_not_clash_with_widely_installed_crds() -> None:
    names = {n for doc in crd_docs(ROOT / "crds").values() for n in doc["spec"]["names"].get("shortNames", [])}
    assert names >= {"vsvc", "vrt"}
    assert not names & TAKEN, names & TAKEN


def old_ratetier_crd() -> str:
    """The current RateTier CRD as an older release shipped it: short name `rt`, no Priority column,
    windows of at most an hour."""
    crd = yaml.safe_load((ROOT / "crds" / "ratetiers.yaml").read_text())
    crd["spec"]["names"]["shortNames"] = ["rt"]
    version = crd["spec"]["versions"][0]
    version["additionalPrinterColumns"] = [c for c in version["additionalPrinterColumns"] if c["name"] != "Priority"]
    version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["windowSeconds"]["maximum"] = 3600
    return yaml.safe_dump(crd)


def tier(name: str, window: int, ns: str) -> str:
    return yaml.safe_dump({"apiVersion": "gateway.vocelio.ai/v1alpha1", "kind": "RateTier",
                           "metadata": {"name": name, "namespace": ns},
                           "spec": {"requests": 10, "windowSeconds": window, "keyBy": "ip",
                                    "match": {"anonymous": True}}})


def make_crds_apply(cp: ControlPlane) -> None:
    result = subprocess.run(["make", "-s", "-C", str(ROOT), "crds-apply", f"KUBECTL={BIN_DIR / 'kubectl'}"],
                            capture_output=True, text=True, env=cp.env(), timeout=120)
    assert result.returncode == 0, result.stderr


def cli_crds_apply(cp: ControlPlane) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(ROOT / p) for p in ("contract", "proxy", "operator"))}
    crds = subprocess.run([sys.executable, "-m", "vocelio_operator.cli", "crds"], capture_output=True, text=True,
                          env=env, timeout=60, check=True).stdout
    cp.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=vocelio-gateway-crds",
               "-f", "-", input=crds)


@pytest.mark.parametrize("upgrade", [make_crds_apply, cli_crds_apply],
                         ids=["make-crds-apply", "vocelio-gateway-crds"])
def test_the_shipped_command_upgrades_an_older_crd_in_place(control_plane: ControlPlane, kube: Kube,
                                                            upgrade: Any) -> None:
    install_crds(control_plane, kube)
    ns = f"crd-upgrade-{upgrade.__name__.replace('_', '-')}"  # one per case: a deleted one lingers
    control_plane.kubectl("create", "namespace", ns, check=False)
    try:
        # What an older release left behind (helm created it; `replace` writes it the same client-side way).
        control_plane.kubectl("replace", "-f", "-", input=old_ratetier_crd())
        control_plane.kubectl("wait", "--for=condition=Established", f"crd/{CRD}", "--timeout=30s")
        control_plane.kubectl("apply", "-f", "-", input=tier("made-under-old", 600, ns))
        refused = control_plane.kubectl("apply", "--dry-run=server", "-f", "-", input=tier("day", 86400, ns),
                                        check=False)
        assert refused.returncode != 0
        assert "windowSeconds" in refused.stderr

        upgrade(control_plane)

        def current() -> dict[str, Any]:
            crd: dict[str, Any] = json.loads(control_plane.kubectl("get", "crd", CRD, "-o", "json").stdout)
            return crd

        crd = current()
        assert crd["spec"]["names"]["shortNames"] == ["vrt"]
        columns = [c["name"] for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]]
        assert "Priority" in columns
        control_plane.kubectl("wait", "--for=condition=Established", f"crd/{CRD}", "--timeout=30s")
        accepted = control_plane.kubectl("apply", "--dry-run=server", "-f", "-", input=tier("day", 86400, ns),
                                         check=False)
        assert accepted.returncode == 0, accepted.stderr
        listed = control_plane.kubectl("get", "vrt", "-n", ns, "-o", "name").stdout.split()
        assert "ratetier.gateway.vocelio.ai/made-under-old" in listed
        assert control_plane.kubectl("get", "rt", "-n", ns, check=False).returncode != 0
        # Running it again is a no-op (idempotent: safe in every upgrade pipeline).
        generation = crd["metadata"]["generation"]
        upgrade(control_plane)
        assert current()["metadata"]["generation"] == generation
    finally:
        control_plane.kubectl("delete", "namespace", ns, "--wait=false", check=False)
        install_crds(control_plane, kube)
