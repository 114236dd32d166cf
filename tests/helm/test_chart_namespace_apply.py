"""Every namespaced object the chart renders names the release namespace, so `helm template -n X |
kubectl apply -f -` (no -n; the kubeconfig's context says `default`) lands everything in X, for
every values file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.harness.controlplane import ControlPlane
from tests.harness.kube import Kube
from tests.harness.stack import install_crds
from tests.helm.chart_support import VALUES_FILES, docs_of, template

EVERYTHING = Path(__file__).parent / "values" / "everything.yaml"
CASES = {"defaults": None, **{p.stem: p for p in VALUES_FILES}, "everything": EVERYTHING}
CLUSTER_SCOPED = {"ClusterRole", "ClusterRoleBinding", "ClusterKopfPeering", "CustomResourceDefinition",
                  "Namespace", "PriorityClass"}
# The Prometheus Operator's kinds: checked statically (their CRDs are not on the test control plane).
NOT_INSTALLED = ("monitoring.coreos.com/",)


def rendered(case: str, namespace: str) -> list[dict[str, Any]]:
    values = CASES[case]
    return docs_of(template(*(["-f", str(values)] if values else []), namespace=namespace, release="nsx"))


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_namespaced_object_names_the_release_namespace(case: str) -> None:
    docs = rendered(case, "team-x")
    namespaced = [d for d in docs if d["kind"] not in CLUSTER_SCOPED]
    assert len(namespaced) > 5
    wrong = [f"{d['kind']}/{d['metadata']['name']}" for d in namespaced if d["metadata"].get("namespace") != "team-x"]
    assert wrong == []


@pytest.mark.parametrize("case", sorted(CASES))
def test_template_piped_to_kubectl_apply_lands_in_the_release_namespace(control_plane: ControlPlane, kube: Kube,
                                                                        case: str) -> None:
    install_crds(control_plane, kube)
    ns = f"nsapply-{case}"
    control_plane.kubectl("create", "namespace", ns, check=False)
    docs = [d for d in rendered(case, ns) if not str(d["apiVersion"]).startswith(NOT_INSTALLED)]
    manifest = "\n---\n".join(json.dumps(d) for d in docs)
    try:
        applied = json.loads(control_plane.kubectl("apply", "-o", "json", "-f", "-", input=manifest).stdout)
        items = applied["items"] if applied.get("kind") == "List" else [applied]
        assert len(items) == len(docs)
        namespaced = [i for i in items if i["kind"] not in CLUSTER_SCOPED]
        assert {i["metadata"]["namespace"] for i in namespaced} == {ns}
        in_default = control_plane.kubectl("get", "deployments,services,configmaps,serviceaccounts,ratetiers",
                                           "-n", "default", "-l", "app.kubernetes.io/instance=nsx",
                                           "-o", "name").stdout.split()
        assert in_default == []
    finally:
        control_plane.kubectl("delete", "-f", "-", "--wait=false", "--ignore-not-found", input=manifest, check=False)
        control_plane.kubectl("delete", "namespace", ns, "--wait=false", check=False)
