"""Every user error of `vocelio-proxy` and `vocelio-gateway` is one line on stderr
and a non-zero exit status, never a traceback: the real console scripts run as
processes, for each path (missing and broken files, unknown settings, bad
environment values, a busy port, bad flags, a missing folder). Also: `--version`,
the environment listed in `--help`, lower-case log levels, and the loud
warning when the gateway starts with no services."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.controlplane import ROOT, free_port
from tests.harness.waiting import poll
from vocelio_operator.local.files import render_folder

BIN = Path(sys.executable).parent


def env(**extra: str) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("VOCELIO_")}
    out["PYTHONPATH"] = os.pathsep.join([str(ROOT / top) for top in ("contract", "proxy", "operator")] + [str(ROOT)])
    out.update(extra)
    return out


def run(prog: str, *args: str, cwd: Path | None = None, **environ: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / prog), *args], capture_output=True, text=True, env=env(**environ),
                          timeout=60, cwd=cwd)


def one_error_line(done: subprocess.CompletedProcess[str], status: int, *needles: str) -> str:
    """Assert the command failed with `status` and exactly one line on stderr holding each needle."""
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == status, (done.returncode, done.stderr)
    assert len(lines) == 1, lines
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as holder:
        holder.bind(("0.0.0.0", 0))
        holder.listen()
        yield holder.getsockname()[1]


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    """The examples' config (18 services: no 'no services' warning)."""
    path = tmp_path / "config.json"
    path.write_text(render_folder(ROOT / "examples" / "resources")[0].config.to_json())
    return path


@pytest.mark.parametrize("prog", ["vocelio-proxy", "vocelio-gateway"])
def test_both_commands_print_their_version(prog: str) -> None:
    done = run(prog, "--version")
    assert done.returncode == 0
    assert done.stdout.startswith(f"{prog} 0.1.0 (commit ")
    assert "Python 3." in done.stdout


def test_a_missing_settings_file_is_one_line(tmp_path: Path, config_file: Path) -> None:
    done = run("vocelio-proxy", "serve", "--config", str(config_file), "--settings", str(tmp_path / "nope.yaml"))
    assert one_error_line(done, 2, "vocelio-proxy serve:", "nope.yaml", "No such file or directory")


def test_a_settings_file_that_is_not_yaml_is_one_line_with_its_position(tmp_path: Path) -> None:
    bad = tmp_path / "settings.yaml"
    bad.write_text("port: [8080\nhost: x\n")
    done = run("vocelio-gateway", "validate", str(tmp_path), "--settings", str(bad))
    assert one_error_line(done, 2, "vocelio-gateway validate:", "invalid YAML (line ")


def test_an_unknown_settings_key_is_named(tmp_path: Path, config_file: Path) -> None:
    settings = tmp_path / "settings.yaml"
    settings.write_text("prot: 8080\nauth:\n  leway_s: 3\n")
    done = run("vocelio-proxy", "serve", "--config", str(config_file), "--settings", str(settings))
    line = one_error_line(done, 2, "prot: unknown setting")
    assert "auth.leway_s: unknown setting" in line


def test_a_bad_environment_value_names_its_variable(config_file: Path) -> None:
    done = run("vocelio-proxy", "serve", "--config", str(config_file), VOCELIO_PORT="eighty")
    assert one_error_line(done, 2, "port (environment VOCELIO_PORT)", "valid integer")


def test_a_list_in_the_environment_that_is_not_json_is_one_line(config_file: Path) -> None:
    done = run("vocelio-proxy", "serve", "--config", str(config_file), VOCELIO_TRUSTED_HOSTS="api.example.com")
    assert one_error_line(done, 2, "trusted_hosts", "JSON")


def test_a_bad_operator_environment_value_is_one_line() -> None:
    done = run("vocelio-gateway", "operator", VOCELIO_OPERATOR_METRICS_PORT="x")
    assert one_error_line(done, 2, "vocelio-gateway operator:", "metrics_port")
    done = run("vocelio-gateway", "operator", VOCELIO_OPERATOR_NAMESPACES="a,b")
    assert one_error_line(done, 2, "namespaces", "JSON")


def test_serve_without_any_config_or_with_a_bad_configmap_name_is_one_line() -> None:
    assert one_error_line(run("vocelio-proxy", "serve"), 2, "no config")
    assert one_error_line(run("vocelio-proxy", "serve", "--config-from-api", "just-a-name"), 2, "is not NAMESPACE/NAME")


def test_a_busy_port_is_one_line_and_a_lower_case_log_level_is_accepted(busy_port: int, config_file: Path) -> None:
    # The failure is the port, not `debug`: the level was accepted in lower case.
    done = run("vocelio-proxy", "serve", "--config", str(config_file), "--port", str(busy_port),
               "--log-level", "debug")
    assert one_error_line(done, 1, "vocelio-proxy serve: cannot listen", "address already in use")
    examples = ROOT / "examples" / "resources"
    done = run("vocelio-gateway", "standalone", "--resources", str(examples), "--port", str(busy_port),
               VOCELIO_LOG_LEVEL="warning")
    assert one_error_line(done, 1, "vocelio-gateway standalone: cannot listen", "address already in use")


def test_a_port_another_program_listens_on_with_so_reuseport_is_busy_for_a_multi_worker_pod(
        config_file: Path) -> None:
    """The supervisor's reservation and workers use SO_REUSEPORT; Linux lets any socket of the
    same user that sets it too join the port. A listener already there (a second gateway started
    by mistake, an nginx or envoy with reuseport) would silently take a share of the connections:
    the pod refuses the port as busy instead."""
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("0.0.0.0", 0))
        other.listen()
        port = other.getsockname()[1]
        done = run("vocelio-proxy", "serve", "--config", str(config_file), "--port", str(port),
                   "--workers", "2", VOCELIO_ADMIN__PORT=str(free_port()))
    assert one_error_line(done, 1, "vocelio-proxy serve: cannot listen", "already in use")


def test_a_busy_operator_port_is_one_line(busy_port: int) -> None:
    done = run("vocelio-gateway", "operator", "--metrics-port", str(busy_port), "--log-level", "info")
    assert one_error_line(done, 1, f"--metrics-port {busy_port}: address already in use")


@pytest.mark.parametrize(("expires", "needle"), [
    ("next tuesday", "is not an ISO 8601 time"),
    ("2027-13-01", "is not an ISO 8601 time"),
    ("2001-01-01T00:00:00Z", "is in the past"),
])
def test_a_bad_expiry_is_one_line_and_mints_nothing(expires: str, needle: str) -> None:
    done = run("vocelio-gateway", "mint-key", "--name", "ci", "--expires", expires)
    assert one_error_line(done, 2, "vocelio-gateway mint-key: --expires", needle)
    assert done.stdout == ""
    assert "voc_" not in done.stderr


def test_a_corrupt_keys_file_is_one_line_and_left_as_it_was(tmp_path: Path) -> None:
    keys = tmp_path / "keys.json"
    keys.write_text('{"keys": "not a list"')
    done = run("vocelio-gateway", "mint-key", "--name", "ci", "--keys-file", str(keys))
    assert one_error_line(done, 2, str(keys), "not an API key file")
    assert keys.read_text() == '{"keys": "not a list"'


def test_an_unwritable_output_is_one_line(tmp_path: Path) -> None:
    done = run("vocelio-gateway", "mint-key", "--name", "ci", "--output", str(tmp_path / "no" / "dir.yaml"))
    assert one_error_line(done, 2, "vocelio-gateway mint-key: --output", "is not a folder")
    assert "voc_" not in done.stderr  # refused before a key was minted and shown


@pytest.mark.parametrize(("prog", "args", "needle"), [
    ("vocelio-proxy", ["serve", "--port", "eighty"], "argument --port: invalid int value"),
    ("vocelio-proxy", ["serv"], "invalid choice"),
    ("vocelio-gateway", ["mint-key"], "the following arguments are required: --name"),
    ("vocelio-gateway", ["render"], "the following arguments are required: folder"),
])
def test_a_usage_error_is_one_line_pointing_to_help(prog: str, args: list[str], needle: str) -> None:
    line = one_error_line(run(prog, *args), 2, needle, "--help)")
    assert line.startswith(prog)


def test_render_of_a_missing_folder_fails(tmp_path: Path) -> None:
    done = run("vocelio-gateway", "render", str(tmp_path / "missing"))
    assert one_error_line(done, 1, "missing: cannot list the folder")
    assert done.stdout == ""


def test_render_of_an_empty_folder_warns(tmp_path: Path) -> None:
    done = run("vocelio-gateway", "render", str(tmp_path))
    assert done.returncode == 0
    assert '"services":[]' in done.stdout
    assert "warning: no VocelioService" in done.stderr


def test_help_lists_the_environment_variables() -> None:
    proxy = run("vocelio-proxy", "serve", "--help").stdout
    for name in ("VOCELIO_PORT", "VOCELIO_LOG_LEVEL", "VOCELIO_LOG_FORMAT", "VOCELIO_AUTH__<KEY>",
                 "overrides the settings file"):
        assert name in proxy
    assert "VOCELIO_PORT" in run("vocelio-gateway", "standalone", "--help").stdout
    assert "VOCELIO_OPERATOR_METRICS_PORT" in run("vocelio-gateway", "operator", "--help").stdout


def test_starting_with_no_services_warns_loudly_and_serves(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen([str(BIN / "vocelio-gateway"), "standalone", "--resources", str(tmp_path),
                             "--no-access-log"], env=env(VOCELIO_PORT=str(port), VOCELIO_SHUTDOWN_DELAY_S="0"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        def live() -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/livez", timeout=2) as answer:
                return bool(answer.status == 200)

        poll("standalone with no services answers /livez", live, deadline_s=30)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    assert f"warning: no VocelioService in {tmp_path}" in stderr  # VOCELIO_PORT was used: it answered
    assert "Traceback" not in stderr
