"""Settings precedence is 12-factor (defaults < settings file < environment <
flags), log levels are accepted in any letter case, and the log format is
json or text."""

from __future__ import annotations

from pathlib import Path

import pytest

from vocelio_proxy.settings import SettingsError, load_settings


@pytest.fixture
def settings_file(tmp_path: Path) -> Path:
    path = tmp_path / "settings.yaml"
    path.write_text("port: 9001\nlog_level: error\nauth:\n  leeway_s: 10\n  max_token_bytes: 4096\n")
    return path


def test_the_environment_overrides_the_settings_file(settings_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOCELIO_PORT", "9002")
    monkeypatch.setenv("VOCELIO_AUTH__LEEWAY_S", "5")
    settings = load_settings(settings_file)
    assert settings.port == 9002
    assert settings.auth.leeway_s == 5
    assert settings.auth.max_token_bytes == 4096
    assert settings.log_level == "ERROR"


def test_flags_override_the_environment_and_defaults_yield_to_all(settings_file: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOCELIO_PORT", "9002")
    assert load_settings(settings_file, port=9003).port == 9003
    assert load_settings(None, defaults={"port": 8080, "host": "127.0.0.1"}).port == 9002
    assert load_settings(None, defaults={"host": "127.0.0.1"}).host == "127.0.0.1"


@pytest.mark.parametrize(("given", "level"), [("debug", "DEBUG"), ("Info", "INFO"), ("warn", "WARNING"),
                                              ("ERROR", "ERROR")])
def test_log_levels_are_accepted_in_any_case(given: str, level: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings(None, log_level=given).log_level == level
    monkeypatch.setenv("VOCELIO_LOG_LEVEL", given)
    assert load_settings(None).log_level == level


def test_an_unknown_level_or_format_is_refused_by_name() -> None:
    with pytest.raises(SettingsError, match="log_level"):
        load_settings(None, log_level="verbose")
    with pytest.raises(SettingsError, match="log_format"):
        load_settings(None, log_format="xml")
    assert load_settings(None, log_format="TEXT").log_format == "text"


def test_an_empty_settings_file_is_the_defaults(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing yet\n")
    assert load_settings(empty).port == 8080


def test_a_settings_file_that_is_a_list_is_refused(tmp_path: Path) -> None:
    listed = tmp_path / "list.yaml"
    listed.write_text("- port: 1\n")
    with pytest.raises(SettingsError, match="must be a mapping"):
        load_settings(listed)


def test_span_export_is_off_by_default_and_its_endpoint_must_be_a_url(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings(None).tracing.exporter == "none"
    with pytest.raises(SettingsError, match=r"tracing\.endpoint"):
        load_settings(None, tracing={"exporter": "otlp-http", "endpoint": "collector:4318"})
    monkeypatch.setenv("VOCELIO_TRACING__EXPORTER", "otlp-http")
    assert load_settings(None).tracing.exporter == "otlp-http"
