"""The operator's one credentials path (`kube.credentials`): what kopf is handed is
what the writer's client was configured with, from the same kubeconfig."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from vocelio_operator.kube.credentials import connection_info, load_configuration


def kubeconfig(tmp_path: Path, user: dict[str, str]) -> Path:
    (tmp_path / "ca.crt").write_text("ca")
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443",
                                               "certificate-authority": str(tmp_path / "ca.crt")}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "test", "context": {"cluster": "c", "user": "u"}}],
    }))
    return path


async def test_a_token_kubeconfig_gives_kopf_the_writers_server_ca_and_token(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp_path, {"token": "s3cr3t-token"})))
    configuration = await load_configuration()
    info = await connection_info(configuration)
    assert info.server == configuration.host == "https://127.0.0.1:6443"
    assert info.ca_path == configuration.ssl_ca_cert
    assert info.ca_path is not None
    assert (info.scheme, info.token) == ("Bearer", "s3cr3t-token")
    assert info.certificate_path is None
    assert info.insecure is False


async def test_a_client_certificate_kubeconfig_gives_kopf_the_same_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "client.crt").write_text("cert")
    (tmp_path / "client.key").write_text("key")
    user = {"client-certificate": str(tmp_path / "client.crt"), "client-key": str(tmp_path / "client.key")}
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp_path, user)))
    configuration = await load_configuration()
    info = await connection_info(configuration)
    assert info.certificate_path == configuration.cert_file
    assert info.private_key_path == configuration.key_file
    assert str(info.certificate_path).endswith("client.crt")
    assert info.token is None
