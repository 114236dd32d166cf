"""Shared by the chart tests (tests/helm/test_chart_*.py): the project-built helm, rendering the
chart per values file, and the chart policy tools (checkov, kubernetes-validate) that `make
chart-checks` installs into their own venv."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.harness.controlplane import BIN_DIR, ROOT, ControlPlane

CHART = ROOT / "charts" / "vocelio-gateway"
VALUES_FILES = tuple(sorted(CHART.glob("values-*.yaml")))
# Where `make chart-checks` installs checkov and kubernetes-validate (their own venv: checkov pins
# packaging<24, which the test venv's pytest refuses). VOCELIO_CHART_CHECKS_BIN points elsewhere.
CHECKS_BIN = Path(os.environ.get("VOCELIO_CHART_CHECKS_BIN", ROOT / ".cache" / "chart-checks" / "bin"))


def helm(*args: str, cp: ControlPlane | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = cp.env() if cp else None
    result = subprocess.run([str(BIN_DIR / "helm"), *args], capture_output=True, text=True, env=env, timeout=180)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stderr}")
    return result


def template(*args: str, namespace: str = "vg", release: str = "vg") -> str:
    """`helm template` with no --kube-version: the built helm knows a current Kubernetes offline."""
    return helm("template", release, str(CHART), "--namespace", namespace, "--set", "image.tag=0.1.0", *args).stdout


def docs_of(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def checks_tool(name: str) -> Path:
    tool = CHECKS_BIN / name
    if not tool.exists():
        raise AssertionError(f"{tool} is missing: run `make chart-checks` (installs checkov and kubernetes-validate)")
    return tool
