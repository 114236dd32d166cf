"""The import-linter contracts in pyproject.toml hold the architecture, so they
must fail when it is broken: each case copies the sources into a temporary tree,
adds one forbidden import to one module, runs `lint-imports` there, and expects
the named contract to break; the untouched copy keeps every contract."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCE_DIRS = ("contract", "proxy", "operator")
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def copy_tree(dest: Path) -> Path:
    for top in SOURCE_DIRS:
        shutil.copytree(ROOT / top, dest / top, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")
    return dest


def lint(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(tree / top) for top in SOURCE_DIRS)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=tree, env=env, capture_output=True, text=True,
                          timeout=120, check=False)


def add_import(tree: Path, module: str, statement: str) -> None:
    root, *rest = module.split(".")
    top = {"vocelio_contract": "contract", "vocelio_proxy": "proxy", "vocelio_operator": "operator"}[root]
    path = (tree / top / root).joinpath(*rest).with_suffix(".py")
    text = path.read_text()
    # After the `from __future__` line (it must stay first): an ordinary module-level import.
    marker = "from __future__ import annotations\n"
    assert marker in text, path
    path.write_text(text.replace(marker, f"{marker}{statement}\n", 1))


def verdict(output: str, contract: str) -> str:
    """KEPT or BROKEN for a contract (lint-imports wraps long names over lines)."""
    flat, name = " ".join(output.split()), " ".join(contract.split())
    for word in ("BROKEN", "KEPT"):
        if f"{name} {word}" in flat:
            return word
    raise AssertionError(f"{contract!r} not reported:\n{output}")


def test_the_untouched_sources_keep_every_contract(tmp_path: Path) -> None:
    result = lint(copy_tree(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert all(verdict(result.stdout, contract) == "KEPT" for _, _, contract in CASES)


CASES = [
    # (module, added import, the contract that must break)
    ("vocelio_contract.paths", "import kubernetes_asyncio",
     "The contract package imports neither side and no I/O"),
    ("vocelio_contract.config", "import vocelio_proxy.settings",
     "The contract package imports neither side and no I/O"),
    ("vocelio_proxy.policy.routing", "import kubernetes_asyncio",
     "Proxy policy is pure: no I/O frameworks, no event loop (the JWKS cache's lock aside)"),
    ("vocelio_proxy.policy.breakers", "import asyncio",
     "Proxy policy is pure: no I/O frameworks, no event loop (the JWKS cache's lock aside)"),
    ("vocelio_proxy.policy.auth.tokens", "import prometheus_client",
     "Proxy policy is pure: no I/O frameworks, no event loop (the JWKS cache's lock aside)"),
    ("vocelio_proxy.policy.ratelimits", "import redis",
     "Proxy policy is pure: no I/O frameworks, no event loop (the JWKS cache's lock aside)"),
    ("vocelio_proxy.policy.health", "import vocelio_proxy.pipeline.handling",
     "Proxy layers: lifecycle > pipeline > process > wire > policy"),
    ("vocelio_proxy.process.state", "import vocelio_proxy.lifecycle.app",
     "Proxy layers: lifecycle > pipeline > process > wire > policy"),
    ("vocelio_proxy.wire.http1.framing", "import socket",
     "The HTTP/1.1 core is sans-I/O (the reader may wrap llhttp, nothing more)"),
    ("vocelio_proxy.wire.http1.heads", "import httptools",
     "Only the reader and the upstream client wrap llhttp"),
    ("vocelio_proxy.wire.http2.rules", "import asyncio",
     "The HTTP/2 rules are sans-I/O (h2's state machine lives only in the connection shell)"),
    ("vocelio_proxy.wire.http2.rules", "import time",
     "The HTTP/2 rules are sans-I/O (h2's state machine lives only in the connection shell)"),
    ("vocelio_proxy.wire.http2.rules", "import h2.connection",
     "The HTTP/2 rules are sans-I/O (h2's state machine lives only in the connection shell)"),
    ("vocelio_proxy.wire.upstream", "import uvloop",
     "The wire knows bytes and connections: no Kubernetes, Redis, metrics or aiohttp"),
    ("vocelio_proxy.pipeline.responses", "import kopf",
     "The pipeline reaches Kubernetes, kopf and uvloop through nobody"),
    ("vocelio_proxy.pipeline.endpoints", "import vocelio_operator.cli",
     "The proxy never imports the operator"),
    ("vocelio_operator.translation.status", "import kopf",
     "Operator translation and model are pure: no Kubernetes client, kopf, event loop or metrics"),
    ("vocelio_operator.translation.rendering", "import vocelio_proxy.lifecycle.app",
     "The operator's model, translation and Kubernetes edge never import the proxy (only standalone mode runs it)"),
    ("vocelio_operator.kube.writer", "import vocelio_proxy.policy.routing",
     "The operator's model, translation and Kubernetes edge never import the proxy (only standalone mode runs it)"),
    ("vocelio_operator.model.resources", "import vocelio_operator.translation.rendering",
     "Operator layers: standalone mode | Kubernetes edge > translation > model"),
    ("vocelio_operator.kube.reconciler", "import vocelio_operator.local.files",
     "Operator layers: standalone mode | Kubernetes edge > translation > model"),
    ("vocelio_operator.local.manifests", "import kopf",
     "kopf lives in the operator's Kubernetes edge only"),
]


@pytest.mark.parametrize(("module", "statement", "contract"), CASES, ids=[f"{m}: {s}" for m, s, _ in CASES])
def test_a_forbidden_import_breaks_its_contract(tmp_path: Path, module: str, statement: str, contract: str) -> None:
    tree = copy_tree(tmp_path)
    add_import(tree, module, statement)
    result = lint(tree)
    assert result.returncode != 0, result.stdout
    assert verdict(result.stdout, contract) == "BROKEN"
