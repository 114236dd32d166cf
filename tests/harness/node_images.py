"""The project's container images for tests on the real node: which engine
builds them here (Docker or Podman, whichever answers), building them through
scripts/images/build.sh (cached by a stamp of their inputs) and the reason the
machine cannot, printed by tests that skip. Used by tests/node and
tests/harness/node.py."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .controlplane import ROOT, HarnessError

CONTAINERS_CONF = ROOT / "scripts" / "images" / "containers.conf"
IMAGE_DIR = ROOT / ".cache" / "node-images"
REPO = "localhost/vocelio"


def engine_env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", str(CONTAINERS_CONF))}


def find_engine() -> tuple[str | None, str]:
    """The first engine that works here, or None and why none does."""
    reasons = []
    for name in ("docker", "podman"):
        if not shutil.which(name):
            reasons.append(f"{name}: not installed")
            continue
        probe = subprocess.run([name, "info"], capture_output=True, text=True, env=engine_env(), timeout=60)
        if probe.returncode == 0:
            return name, ""
        reasons.append(f"{name}: {(probe.stderr.strip().splitlines() or ['no answer'])[-1]}")
    return None, "; ".join(reasons)


@dataclass(frozen=True)
class BuiltImages:
    engine: str
    tag: str
    archives: dict[str, Path]  # component -> docker-archive tarball

    def ref(self, component: str) -> str:
        return f"{REPO}/{component}:{self.tag}"


def chart_app_version() -> str:
    for line in (ROOT / "charts" / "vocelio-gateway" / "Chart.yaml").read_text().splitlines():
        if line.startswith("appVersion:"):
            return line.split(":", 1)[1].strip().strip('"')
    raise HarnessError("Chart.yaml has no appVersion")


def build_images(engine: str, extras: dict[str, tuple[Path, Path]] | None = None) -> BuiltImages:
    """Build (or reuse) the proxy and operator images and `extras` (name -> Dockerfile, context) as archives."""
    args = ["bash", str(ROOT / "scripts" / "images" / "build.sh"), "--save", str(IMAGE_DIR)]
    for name, (dockerfile, context) in (extras or {}).items():
        args += ["--extra", f"{name}={dockerfile}:{context}"]
    env = {**engine_env(), "VOCELIO_ENGINE": engine, "IMAGE_REPO": REPO}
    result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=1200, cwd=ROOT)
    if result.returncode != 0:
        raise HarnessError(f"image build failed ({result.returncode}):\n"
                           f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    names = ["gateway-proxy", "gateway-operator", *(extras or {})]
    return BuiltImages(engine, chart_app_version(), {n: IMAGE_DIR / f"{n}.tar" for n in names})


def run_in_image(built: BuiltImages, component: str, script: str) -> subprocess.CompletedProcess[str]:
    """Run a shell script in a throwaway container of the image (host network, no privileges)."""
    return subprocess.run([built.engine, "run", "--rm", "--network", "host", "--entrypoint", "/bin/sh",
                           built.ref(component), "-c", script],
                          capture_output=True, text=True, env=engine_env(), timeout=120)
