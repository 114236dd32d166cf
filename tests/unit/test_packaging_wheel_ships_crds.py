"""The CRDs ship inside the wheel (vocelio_operator/crds/, package data), byte for byte the
repository's crds/ and the chart's crds/, and an installed package validates with them: a schema
refusal from an installed wheel, and a one-line error (never weaker checks) when they are missing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / "crds"
COPIES = (ROOT / "charts" / "vocelio-gateway" / "crds", ROOT / "operator" / "vocelio_operator" / "crds")
BAD_TIER = """apiVersion: gateway.vocelio.ai/v1alpha1
kind: RateTier
metadata: {name: bad, namespace: default}
spec: {requests: 10, windowSeconds: 60, keyBy: ip, match: {anonymous: true}, burst: 5}
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`pip wheel --no-deps` of a copy of the project (so the build leaves nothing in the checkout)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, src / name)
    for name in ("contract", "proxy", "operator"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet",
                    "-w", str(out), str(src)], check=True, capture_output=True, text=True, timeout=300)
    (built,) = out.glob("vocelio_gateway-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    site = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(site),
                    str(wheel)], check=True, capture_output=True, text=True, timeout=300)
    return site


def run_installed(site: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The installed package first on the path, run from a folder with no crds/ nearby."""
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run([sys.executable, "-c", "import sys, vocelio_operator.cli as c; "
                           "print(c.__file__, file=sys.stderr); sys.exit(c.main(sys.argv[1:]))", *args],
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=120)


def test_every_copy_of_the_crds_is_the_repositorys_crds() -> None:
    names = sorted(p.name for p in CRDS.glob("*.yaml"))
    assert {"vocelioservices.yaml", "ratetiers.yaml"} <= set(names)
    for copy in COPIES:
        assert sorted(p.name for p in copy.glob("*.yaml")) == names, copy
        for name in names:
            assert (copy / name).read_bytes() == (CRDS / name).read_bytes(), f"{copy / name}: cp crds/{name} there"


def test_the_wheel_contains_the_crds(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        for path in sorted(CRDS.glob("*.yaml")):
            assert zf.read(f"vocelio_operator/crds/{path.name}") == path.read_bytes(), path.name


def test_an_installed_wheel_refuses_what_only_the_crd_schema_refuses(installed: Path, tmp_path: Path) -> None:
    (tmp_path / "tier.yaml").write_text(BAD_TIER)
    result = run_installed(installed, "validate", "tier.yaml", cwd=tmp_path)
    assert str(installed) in result.stderr.splitlines()[0]  # the installed copy ran, not the checkout
    assert result.returncode == 1, result.stderr
    assert "'burst' was unexpected" in result.stderr  # the CRD schema's own refusal


def test_the_installed_crds_command_prints_the_shipped_crds(installed: Path, tmp_path: Path) -> None:
    result = run_installed(installed, "crds", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("kind: CustomResourceDefinition") == len(list(CRDS.glob("*.yaml")))
    assert "shortNames: [vrt]" in result.stdout


def test_an_install_without_its_crds_fails_in_one_line_instead_of_checking_less(installed: Path,
                                                                                tmp_path: Path) -> None:
    broken = tmp_path / "site"
    shutil.copytree(installed, broken)
    shutil.rmtree(broken / "vocelio_operator" / "crds")
    (tmp_path / "tier.yaml").write_text(BAD_TIER)
    for args in (["validate", "tier.yaml"], ["crds"]):
        result = run_installed(broken, *args, cwd=tmp_path)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        errors = result.stderr.splitlines()[1:]  # after the module path line
        assert len(errors) == 1, errors
        assert "CRDs are missing" in errors[0], errors
        assert "Traceback" not in result.stderr
