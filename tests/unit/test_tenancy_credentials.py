"""Credentials from files (proxy settings): a JWT issuer's HMAC secret and the
Redis password are read from mounted Secret files or the environment, never
need to sit in the settings file, and a missing or empty file is a one-line
settings error that names the file and never a credential."""

from __future__ import annotations

from pathlib import Path

import pytest

from vocelio_proxy.settings import ProxySettings, SettingsError, load_settings

SECRET = "s3cr3t-hmac-value"


def issuer(**extra: object) -> dict[str, object]:
    return {"issuer": "https://auth.test", "algorithms": ["HS256"], **extra}


def test_an_issuer_secret_is_read_from_its_file_without_the_trailing_newline(tmp_path: Path) -> None:
    path = tmp_path / "hmac"
    path.write_text(SECRET + "\n")
    settings = ProxySettings(auth={"issuers": [issuer(secret_file=str(path))]})
    assert settings.auth.issuers[0].secret == SECRET
    assert SECRET not in repr(settings)


@pytest.mark.parametrize(("content", "message"), [(None, "cannot read credential file"), ("", "is empty"),
                                                  ("\n", "is empty"), (b"\xff\xfe", "cannot read credential file")])
def test_an_unreadable_or_empty_secret_file_is_a_one_line_error(tmp_path: Path, content: str | bytes | None,
                                                               message: str) -> None:
    path = tmp_path / "hmac"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    settings_file = tmp_path / "settings.yaml"
    settings_file.write_text(f"auth: {{issuers: [{{issuer: 'https://auth.test', algorithms: [HS256], "
                             f"secret_file: '{path}'}}]}}\n")
    with pytest.raises(SettingsError) as caught:
        load_settings(settings_file)
    text = str(caught.value)
    assert message in text
    assert str(path) in text
    assert "\n" not in text


def test_a_secret_and_a_secret_file_together_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "hmac"
    path.write_text(SECRET)
    with pytest.raises(ValueError, match="not both") as caught:
        ProxySettings(auth={"issuers": [issuer(secret="inline", secret_file=str(path))]})
    assert SECRET not in str(caught.value)


def test_the_redis_password_comes_from_the_environment_or_a_file(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOCELIO_REDIS_PASSWORD", "from-env")
    assert ProxySettings().redis_password == "from-env"
    monkeypatch.delenv("VOCELIO_REDIS_PASSWORD")
    path = tmp_path / "password"
    path.write_text("from-file\n")
    settings = ProxySettings(redis_password_file=str(path))
    assert settings.redis_password == "from-file"
    assert "from-file" not in repr(settings)
    with pytest.raises(ValueError, match="not both"):
        ProxySettings(redis_password="x", redis_password_file=str(path))
