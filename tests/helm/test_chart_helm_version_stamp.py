"""The project-built helm is stamped like an upstream release (tests/controlplane/build.sh): version,
commit, tree state, and the Kubernetes version it assumes offline, so `helm template` and `helm lint`
accept the chart's kubeVersion without --kube-version."""

from __future__ import annotations

import re
from pathlib import Path

from tests.helm.chart_support import CHART, helm


def test_helm_reports_its_release_version_commit_and_a_clean_tree() -> None:
    stamp = helm("version", "--template", "{{.Version}} {{.GitCommit}} {{.GitTreeState}}").stdout
    version, commit, tree = stamp.split()
    assert version == "v3.20.2"
    assert re.fullmatch(r"[0-9a-f]{40}", commit), commit
    assert tree == "clean"


def test_offline_helm_assumes_a_current_kubernetes_not_v1_20(tmp_path: Path) -> None:
    chart = tmp_path / "probe"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: probe\nversion: 0.1.0\n")
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: probe}\n"
        "data: {kube: {{ .Capabilities.KubeVersion.Version | quote }}}\n")
    out = helm("template", "probe", str(chart)).stdout
    version = re.search(r'kube: "v1\.(\d+)\.0"', out)
    assert version, out
    assert int(version.group(1)) >= 30, out


def test_the_chart_renders_and_lints_without_kube_version() -> None:
    assert "kind: Deployment" in helm("template", "vg", str(CHART), "--set", "image.tag=0.1.0").stdout
    assert "0 chart(s) failed" in helm("lint", str(CHART)).stdout
