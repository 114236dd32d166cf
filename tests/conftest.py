"""Shared fixtures for real parts: the Kubernetes control plane, pod networks
and namespaces. Cluster fixtures are session-scoped: the control plane starts
once (seconds when the binaries are cached)."""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

from tests.harness.controlplane import BIN_DIR, ROOT, ControlPlane, start_control_plane
from tests.harness.kube import Kube
from tests.harness.kubelet import ensure_node
from tests.harness.podnet import PodNetwork
from tests.harness.redis_server import RedisServer

# A checkout run with PYTHONPATH naming the source roots (helper worktrees used
# `proxy:operator` before the contract package existed) also gets `contract/`, in this
# process and in the gateways and CLIs the tests start (they inherit the environment).
_contract = str(ROOT / "contract")
if os.environ.get("PYTHONPATH") and _contract not in os.environ["PYTHONPATH"].split(os.pathsep):
    os.environ["PYTHONPATH"] = os.pathsep.join([_contract, os.environ["PYTHONPATH"]])
    sys.path.insert(0, _contract)

# Generated tests judge behaviour, not speed: on a loaded 2-core CI machine a per-example
# deadline would fail for the wrong reason. Failing examples are printed for replay.
hypothesis_settings.register_profile("vocelio", deadline=None, print_blob=True)
hypothesis_settings.load_profile("vocelio")

pytest_plugins = ["tests.harness.app_fixtures", "tests.harness.hostile"]

_failed: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.failed:
        _failed.append(report.nodeid)


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    cp = start_control_plane()
    try:
        yield cp
    finally:
        cp.stop()
        if _failed:
            keep = ROOT / ".cache" / "test-logs" / cp.workdir.name
            shutil.copytree(cp.logs, keep, dirs_exist_ok=True)
            print(f"\ncontrol-plane logs kept in {keep}")
        shutil.rmtree(cp.workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def kube(control_plane: ControlPlane) -> Kube:
    client = Kube(control_plane.server, control_plane.ssl_context())
    ensure_node(client)
    return client


@pytest.fixture(scope="session")
def pod_network(control_plane: ControlPlane) -> Iterator[PodNetwork]:
    net = PodNetwork(control_plane.logs / "pods")
    try:
        yield net
    finally:
        net.close()


@pytest.fixture
def namespace(control_plane: ControlPlane, kube: Kube) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    kube.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    yield name
    kube.delete(f"/api/v1/namespaces/{name}")


#: Fixtures that need the control plane or the binaries `make cluster-bins` builds (helm).
CLUSTER_FIXTURES = frozenset({"control_plane", "kube", "pod_network", "namespace", "helm_binary"})
#: Fixtures that need a real redis-server.
REDIS_FIXTURES = frozenset({"redis_server"})
#: Folders whose every test drives the control plane or helm (their module helpers call the binaries).
CLUSTER_FOLDERS = frozenset({"cluster", "operator_cluster", "helm"})


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true", default=False,
                     help="rewrite the expected files of tests/golden from the current translation")


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    """True when the golden files should be rewritten (--update-golden or VOCELIO_UPDATE_GOLDEN=1)."""
    return bool(request.config.getoption("--update-golden") or os.environ.get("VOCELIO_UPDATE_GOLDEN"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Markers follow what a test uses, so `-m "not cluster"` cannot drift: a test that
    requests a cluster fixture (directly or through another fixture: `fixturenames`
    is the whole closure) or lives in a cluster folder is `cluster`; one that requests
    `redis_server` is `redis`."""
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        if used & CLUSTER_FIXTURES or Path(str(item.fspath)).parent.name in CLUSTER_FOLDERS:
            item.add_marker(pytest.mark.cluster)
        if used & REDIS_FIXTURES:
            item.add_marker(pytest.mark.redis)


@pytest.fixture(scope="session")
def helm_binary() -> Path:
    """The helm binary `make cluster-bins` builds (marks the test `cluster`)."""
    path = BIN_DIR / "helm"
    assert path.exists(), f"{path} missing: run `make cluster-bins`"
    return path


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()
