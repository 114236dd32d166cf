"""The rendered chart passes checkov (every finding fixed, or skipped in the chart with its reason)
and strict kubernetes-validate against the Kubernetes 1.30 and 1.37 schemas, for every values file:
the chart's defaults, each environment file and tests/helm/values/everything.yaml (every optional
branch on). The chart's own custom resources are checked against the packaged CRD schemas."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.helm.chart_support import CHART, VALUES_FILES, checks_tool, docs_of, helm, template
from vocelio_operator.model.schemas import schema_problems

EVERYTHING = Path(__file__).parent / "values" / "everything.yaml"
CASES = {"defaults": None, **{p.stem: p for p in VALUES_FILES}, "everything": EVERYTHING}
# Kinds that no Kubernetes release schema knows: ours (checked against our CRDs below), kopf's peering
# and the Prometheus Operator's.
CUSTOM_GROUPS = ("gateway.vocelio.ai/", "kopf.dev/", "monitoring.coreos.com/")


def rendered(case: str, tmp_path: Path) -> Path:
    values = CASES[case]
    out = tmp_path / f"{case}.yaml"
    out.write_text(template(*(["-f", str(values)] if values else [])))
    return out


@pytest.mark.parametrize("case", sorted(CASES))
def test_checkov_finds_nothing_that_the_chart_does_not_justify(case: str, tmp_path: Path) -> None:
    manifest = rendered(case, tmp_path)
    result = subprocess.run(
        [str(checks_tool("checkov")), "-f", str(manifest), "--framework", "kubernetes", "--skip-download",
         "-o", "json"], capture_output=True, text=True, timeout=300)
    assert result.returncode in (0, 1), result.stderr[-2000:]  # 2 is checkov's own crash (e.g. a bad skip)
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    failed = [f"{c['check_id']} {c['resource']}" for r in reports for c in r["results"]["failed_checks"]]
    assert not failed, failed
    assert all(r["summary"]["parsing_errors"] == 0 for r in reports)
    assert sum(r["summary"]["passed"] for r in reports) > 100
    for r in reports:
        for skipped in r["results"]["skipped_checks"]:
            reason = (skipped.get("check_result") or {}).get("suppress_comment", "")
            assert len(reason) > 20, f"{skipped['check_id']} on {skipped['resource']} is skipped without a reason"


def test_a_pinned_digest_turns_the_digest_check_back_on(tmp_path: Path) -> None:
    """Skips are emitted only while their reason holds: with digests set, CKV_K8S_43 is checked."""
    unpinned = docs_of(rendered("defaults", tmp_path).read_text())
    pinned = docs_of(rendered("everything", tmp_path).read_text())

    def skips(docs: list[dict[str, Any]]) -> set[str]:
        return {v.split("=")[0] for d in docs if d["kind"] == "Deployment"
                for k, v in (d["metadata"].get("annotations") or {}).items() if k.startswith("checkov.io/skip")}

    assert "CKV_K8S_43" in skips(unpinned)
    assert "CKV_K8S_15" in skips(unpinned)
    assert "CKV_K8S_43" not in skips([d for d in pinned if "-redis" not in d["metadata"]["name"]])
    assert "CKV_K8S_15" not in skips([d for d in pinned if "-redis" not in d["metadata"]["name"]])


@pytest.mark.parametrize("kube", ["1.30.0", "1.37.0"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_every_built_in_object_passes_strict_kubernetes_validate(case: str, kube: str, tmp_path: Path) -> None:
    manifest = rendered(case, tmp_path)
    docs = docs_of(manifest.read_text())
    result = subprocess.run([str(checks_tool("kubernetes-validate")), "--strict", "-k", kube, str(manifest)],
                            capture_output=True, text=True, timeout=300)
    lines = (result.stdout + result.stderr).splitlines()
    assert result.returncode == 0, "\n".join(lines[-30:])
    assert not [line for line in lines if line.startswith("ERROR")], lines
    unknown = [line for line in lines if line.startswith("WARN")]
    assert all(any(f"api version {g}" in line for g in CUSTOM_GROUPS) for line in unknown), unknown
    built_in = [d for d in docs if not str(d["apiVersion"]).startswith(CUSTOM_GROUPS)]
    passed = [line for line in lines if " passed for resource " in line]
    assert len(passed) == len(built_in) > 5, (len(passed), len(built_in))


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_charts_own_custom_resources_match_the_packaged_crds(case: str, tmp_path: Path) -> None:
    docs = docs_of(rendered(case, tmp_path).read_text())
    ours = [d for d in docs if str(d["apiVersion"]).startswith("gateway.vocelio.ai/")]
    assert ours, "the seed RateTiers are rendered"
    for doc in ours:
        assert schema_problems(doc) == [], doc["metadata"]["name"]


@pytest.mark.parametrize("case", sorted(CASES))
def test_helm_lint_strict_passes_for_every_values_file(case: str) -> None:
    values = CASES[case]
    result = helm("lint", "--strict", str(CHART), *(["-f", str(values)] if values else []), check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout, result.stdout
    assert "[ERROR]" not in result.stdout, result.stdout
