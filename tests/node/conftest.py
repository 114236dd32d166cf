"""The real node for tests/node: started once for the folder (about a minute cold
from cached binaries and images), stopped and cleaned up at the end. Tests skip,
printing the reason, only when this machine cannot run a node at all."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.controlplane import ROOT
from tests.harness.node import NodeUnavailable, RealNode, preflight, start_node
from tests.node.test_chart_on_node import APPS, CHART, apply, backend_manifests


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.node)


# Package scope: the node (and the host settings it needs, such as IP forwarding) is gone before the
# tests of other folders run in the same session.
@pytest.fixture(scope="package")
def node(request: pytest.FixtureRequest) -> Iterator[RealNode]:
    missing = preflight()
    if missing:
        pytest.skip(f"this machine cannot run the real node: {missing}")
    try:
        started = start_node()
    except NodeUnavailable as exc:
        pytest.skip(str(exc))
    print(f"\nreal node started: {started.timings}")
    try:
        yield started
    finally:
        failed = request.session.testsfailed
        if failed:
            keep = ROOT / ".cache" / "test-logs" / started.workdir.name
            shutil.copytree(started.cp.logs, keep, dirs_exist_ok=True)
            print(f"\nnode logs kept in {keep}")
        started.stop()
        shutil.rmtree(started.workdir, ignore_errors=True)


@pytest.fixture(scope="package")
def backends(node: RealNode) -> None:
    assert node.images is not None
    node.helm("show", "crds", str(CHART))  # the chart carries its CRDs
    node.kubectl("apply", "-f", str(CHART / "crds"))
    apply(node, backend_manifests(node.images))
    node.kubectl("rollout", "status", "deployment/echo", "-n", APPS, "--timeout=180s", timeout=210)
