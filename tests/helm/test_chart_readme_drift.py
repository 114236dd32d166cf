"""The chart README is generated from the `# --` comments in values.yaml (scripts/chart_readme.py)
and every value a user can set is documented there."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from tests.harness.controlplane import ROOT
from tests.helm.chart_support import CHART

SCRIPT = ROOT / "scripts" / "chart_readme.py"


def run_generator(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60)


def documented(text: str) -> set[str]:
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        from chart_readme import documented_keys  # type: ignore[import-not-found]  # scripts/, not a package
    finally:
        sys.path.remove(str(SCRIPT.parent))
    return {key for key, _ in documented_keys(text)}


def leaves(node: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(node, dict) and node:
        for key, value in node.items():
            yield from leaves(value, f"{prefix}{key}.")
    else:
        yield prefix[:-1]


def test_the_checked_in_chart_readme_is_what_the_generator_prints() -> None:
    result = run_generator("--check")
    assert result.returncode == 0, result.stderr


def test_the_drift_check_fails_when_a_value_comment_changes(tmp_path: Path) -> None:
    readme = CHART / "README.md"
    original = readme.read_text()
    try:
        readme.write_text(original.replace("Environment name", "Environment label", 1))
        result = run_generator("--check")
        assert result.returncode == 1
        assert "make chart-readme" in result.stderr
    finally:
        readme.write_text(original)


def test_every_value_is_documented_in_the_readme() -> None:
    text = (CHART / "values.yaml").read_text()
    docs = documented(text)
    missing = [leaf for leaf in leaves(yaml.safe_load(text))
               if not any(leaf == d or leaf.startswith(d + ".") for d in docs)]
    assert missing == []
    readme = (CHART / "README.md").read_text()
    for key in ("nameOverride", "proxy.image.digest", "operator.serviceAccount.annotations",
                "service.loadBalancerClass", "proxy.extraVolumeMounts"):
        assert f"| `{key}` |" in readme, key
