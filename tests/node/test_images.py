"""The images as built by `make images` (scripts/images/build.sh): non-root,
no installer or compiler at runtime, exactly the locked dependencies, and the
entrypoints start. Skips, saying why, only where no container engine works."""

from __future__ import annotations

import json

import pytest

from tests.harness.node_images import BuiltImages, build_images, find_engine, run_in_image
from tests.node.test_lock import pins

# Cold runs build the images and start the node inside the first test's time.
pytestmark = [pytest.mark.node, pytest.mark.timeout(900)]
COMPONENTS = ["gateway-proxy", "gateway-operator"]


@pytest.fixture(scope="module")
def images() -> BuiltImages:
    engine, why = find_engine()
    if engine is None:
        pytest.skip(f"no container engine works on this machine ({why}); `make system-deps` installs podman")
    return build_images(engine)


@pytest.mark.parametrize("component", COMPONENTS)
def test_the_image_runs_as_the_unprivileged_user(images: BuiltImages, component: str) -> None:
    result = run_in_image(images, component, "id -u; id -g")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["10001", "10001"]


@pytest.mark.parametrize("component", COMPONENTS)
def test_the_image_carries_no_installer_and_no_compiler(images: BuiltImages, component: str) -> None:
    script = """
for m in pip setuptools wheel ensurepip; do python3 -c "import $m" 2>/dev/null && echo "module:$m"; done
for t in pip pip3 gcc cc make apt-get-build-dep; do command -v $t >/dev/null && echo "tool:$t"; done
ls /usr/share/python-wheels 2>/dev/null | sed 's/^/wheel:/'
echo done
"""
    result = run_in_image(images, component, script)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["done"]


@pytest.mark.parametrize("component", COMPONENTS)
def test_the_image_holds_exactly_the_locked_dependencies(images: BuiltImages, component: str) -> None:
    script = ("python3 -c 'import importlib.metadata as m, json; "
              "print(json.dumps({d.metadata[\"Name\"]: d.version for d in m.distributions()}))'")
    result = run_in_image(images, component, script)
    assert result.returncode == 0, result.stderr
    from packaging.utils import canonicalize_name
    installed = {canonicalize_name(k): v for k, v in json.loads(result.stdout).items()}
    assert installed.pop(canonicalize_name("vocelio-gateway")) == images.tag
    locked = {n: v for n, (v, _) in pins("requirements.lock").items()}
    assert {n: v for n, v in installed.items() if locked.get(n) != v} == {}, "installed beyond or against the lock"
    # The lock's build backend is used in the build stage only.
    assert "setuptools" not in installed


@pytest.mark.parametrize(("component", "command"), [
    ("gateway-proxy", "vocelio-proxy --help"), ("gateway-operator", "vocelio-gateway --help")])
def test_the_entrypoint_command_starts(images: BuiltImages, component: str, command: str) -> None:
    result = run_in_image(images, component, f"{command} >/dev/null && echo started")
    assert result.stdout.strip() == "started", result.stderr
