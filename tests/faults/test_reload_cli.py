"""The inputs that must not kill hot reload give one-line errors, never a
traceback, from `vocelio-gateway validate` (exit 1) and from standalone
start-up: the gateway starts and serves the valid services while printing one
line per bad file, or refuses to start (exit 1, one line per problem plus the
reason) when nothing is valid. Real processes, real sockets."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.harness.controlplane import ROOT, free_port
from tests.harness.reload_tools import service_yaml
from tests.harness.waiting import poll

GOOD = service_yaml("good", 9)

BAD = {
    "non-utf8.yaml": GOOD.replace("name: good", "name: b\xffd").encode("latin-1"),
    "api-int.yaml": GOOD.replace("gateway.vocelio.ai/v1alpha1", "1").replace("good", "api-int").encode(),
    "kind-list.yaml": GOOD.replace("kind: VocelioService", "kind: [a]").encode(),
    "meta-list.yaml": GOOD.replace("metadata:\n  name: good", "metadata: [x]").encode(),
    "scalar.yaml": b"42\n",
    "tabs.yaml": b"a:\n\tb: 1\n",
    "dup.yaml": (GOOD.replace("good", "dup") + "spec: {}\n").encode(),
    "bomb.yaml": b"a: &a [1,1,1,1,1,1,1,1,1,1]\n" + b"".join(
        b"b%d: &b%d [" % (i, i) + b",".join([b"*a" if i == 0 else b"*b%d" % (i - 1)] * 10) + b"]\n"
        for i in range(7)),
    "deep.yaml": b"[" * 500 + b"]" * 500,
    "syntax.yaml": b"a: [1, 2\n",
    "stream.yaml": (GOOD.replace("good", "streamed") + "---\n- not a manifest\n").encode(),
}


def env() -> dict[str, str]:
    out = dict(os.environ)
    out["PYTHONPATH"] = os.pathsep.join([str(ROOT / top) for top in ("contract", "proxy", "operator")] + [str(ROOT)])
    return out


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "vocelio_operator.cli", *args]


def write_bad(folder: Path) -> None:
    for name, data in BAD.items():
        (folder / name).write_bytes(data)
    (folder / "dir.yaml").mkdir()
    (folder / "loop.yaml").symlink_to(folder / "loop.yaml")
    os.mkfifo(folder / "fifo.yaml")


def assert_one_line_per_bad_file(stderr: str, folder: Path) -> None:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    for name in [*BAD, "dir.yaml", "loop.yaml", "fifo.yaml"]:
        mine = [line for line in lines if f"{folder / name}" in line]
        assert len(mine) == 1, (name, lines)


def test_validate_reports_each_bad_file_on_one_line_and_exits_1(tmp_path: Path) -> None:
    write_bad(tmp_path)
    (tmp_path / "good.yaml").write_text(GOOD)
    done = subprocess.run(cli("validate", str(tmp_path)), capture_output=True, text=True, env=env(), timeout=60,
                          errors="replace")
    assert done.returncode == 1
    assert_one_line_per_bad_file(done.stderr, tmp_path)
    assert "problems" in done.stdout
    assert done.stdout.count("\n") == 1


@pytest.mark.parametrize("name", sorted(BAD))
def test_validate_of_one_bad_file_is_one_line(name: str, tmp_path: Path) -> None:
    path = tmp_path / name
    path.write_bytes(BAD[name])
    done = subprocess.run(cli("validate", str(path)), capture_output=True, text=True, env=env(), timeout=60,
                          errors="replace")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert str(path) in done.stderr


def test_validate_of_a_missing_path_is_one_line(tmp_path: Path) -> None:
    done = subprocess.run(cli("validate", str(tmp_path / "nope.yaml")), capture_output=True, text=True, env=env(),
                          timeout=60)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.strip() == f"{tmp_path / 'nope.yaml'}: cannot read: No such file or directory"


def test_standalone_serves_the_valid_services_and_reports_each_bad_file(tmp_path: Path) -> None:
    write_bad(tmp_path)
    (tmp_path / "good.yaml").write_text(GOOD)
    port = free_port()
    proc = subprocess.Popen(cli("standalone", "--resources", str(tmp_path), "--port", str(port), "--no-access-log"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env(), start_new_session=True)
    try:
        def routed() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as resp:
                    return b'"services": 2' in resp.read()  # good + the valid document of stream.yaml
            except OSError:
                return False

        poll("standalone gateway serving both valid services", routed, 30)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    text = stderr.decode(errors="replace")
    assert_one_line_per_bad_file(text, tmp_path)
    assert all(line.startswith("error: ") for line in text.splitlines() if line.strip())


def test_standalone_refuses_to_start_when_nothing_is_valid(tmp_path: Path) -> None:
    for name in ("tabs.yaml", "scalar.yaml", "bomb.yaml"):
        (tmp_path / name).write_bytes(BAD[name])
    started = time.monotonic()
    done = subprocess.run(cli("standalone", "--resources", str(tmp_path), "--port", str(free_port())),
                          capture_output=True, text=True, env=env(), timeout=60)
    assert done.returncode == 1
    assert time.monotonic() - started < 30
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 4, lines
    assert lines[-1].startswith(f"refusing to start: no valid VocelioService in {tmp_path}")


def test_standalone_refuses_a_missing_folder_in_one_line(tmp_path: Path) -> None:
    done = subprocess.run(cli("standalone", "--resources", str(tmp_path / "missing"), "--port", str(free_port())),
                          capture_output=True, text=True, env=env(), timeout=60)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("refusing to start: ")
    assert "cannot list the folder: No such file or directory" in done.stderr
