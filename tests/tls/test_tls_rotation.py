"""Hot rotation of mounted certificates (kubelet's `..data` swap): new
handshakes get the new certificate, a connection opened before keeps serving,
a broken or expired replacement keeps the last good one (a log line without
key material, a metric), and startup refuses a certificate it cannot serve."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from tests.harness.app_fixtures import poll
from tests.harness.tls_fixtures import TlsGatewayFactory
from tests.harness.tls_tools import TestCa, TlsClient, mount_secret, s_client
from tests.harness.waiting import poll_async
from vocelio_proxy.lifecycle import appkeys as keys
from vocelio_proxy.lifecycle.app import create_app, start_gateway
from vocelio_proxy.settings import ProxySettings, SettingsError


def _reloads(registry: CollectorRegistry, name: str, result: str) -> float:
    value = registry.get_sample_value("vocelio_tls_certificate_reloads_total", {"certificate": name, "result": result})
    return value or 0.0


async def test_a_rotated_certificate_serves_new_handshakes_while_an_open_connection_keeps_working(
        tls_gateway: TlsGatewayFactory, ca: TestCa) -> None:
    old, new = ca.issue("a.example.com"), ca.issue("a.example.com")
    gw = await tls_gateway({"a": old})
    before = await TlsClient.connect(gw.tls_port, gw.ca_file)
    try:
        assert before.serial == old.serial
        assert (await before.request("/api/echo/x"))[0] == 200
        mount_secret(gw.ca_file.parent / "a", new)

        async def new_handshake_sees_new() -> bool:
            return (await s_client(gw.tls_port, servername="a.example.com")).serial == new.serial

        await poll_async("the rotated certificate on a new handshake", new_handshake_sees_new, 10)
        for _ in range(3):  # the connection opened before the rotation keeps serving requests
            status, _, _ = await before.request("/api/echo/x")
            assert status == 200
        assert before.serial == old.serial
    finally:
        await before.close()
    registry = gw.running.app[keys.METRICS].registry
    assert _reloads(registry, "a", "success") == 2
    expiry = registry.get_sample_value("vocelio_tls_certificate_expiry_timestamp_seconds", {"certificate": "a"})
    assert expiry is not None
    assert expiry > 0


@pytest.mark.parametrize("breakage", ["key of another certificate", "garbage", "expired", "empty key",
                                      "encrypted key"])
async def test_a_broken_replacement_keeps_the_last_good_certificate(
        tls_gateway: TlsGatewayFactory, ca: TestCa, breakage: str, caplog: pytest.LogCaptureFixture) -> None:
    good = ca.issue("a.example.com")
    gw = await tls_gateway({"a": good})
    registry = gw.running.app[keys.METRICS].registry
    other = ca.issue("a.example.com")
    if breakage == "key of another certificate":
        cert, key = other.cert_pem, good.key_pem
    elif breakage == "garbage":
        cert, key = b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n", other.key_pem
    elif breakage == "expired":
        expired = ca.issue("a.example.com", days=-1, not_before_days=-3)
        cert, key = expired.cert_pem, expired.key_pem
    elif breakage == "empty key":
        cert, key = other.cert_pem, b""
    else:
        from cryptography.hazmat.primitives import serialization

        loaded = serialization.load_pem_private_key(other.key_pem, None)
        cert, key = other.cert_pem, loaded.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pass"))
    with caplog.at_level(logging.WARNING, logger="vocelio.proxy.tls"):
        mount_secret(gw.ca_file.parent / "a", cert=cert, key=key)
        await poll(lambda: _reloads(registry, "a", "invalid") == 1, "the broken version refused", 10)
    handshake = await s_client(gw.tls_port, servername="a.example.com", ca_file=gw.ca_file)
    assert handshake.serial == good.serial, "a broken certificate replaced the good one"
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{gw.port}/status") as resp:
        shown = (await resp.json())["tls"]["a"]
    assert shown["serving"]
    assert int(shown["serial"], 16) == good.serial
    assert shown["problem"]
    text = caplog.text
    assert "tls certificate refused" in text
    for secret in (good.key_pem, other.key_pem, key):
        body = b"".join(secret.splitlines()[1:-1])[:40].decode()
        assert not body or body not in text, "key material reached the log"
    # The fixed version is taken as soon as it appears.
    fixed = ca.issue("a.example.com")
    mount_secret(gw.ca_file.parent / "a", fixed)

    async def fixed_is_served() -> bool:
        return (await s_client(gw.tls_port, servername="a.example.com")).serial == fixed.serial

    await poll_async("the fixed certificate served", fixed_is_served, 10)


async def test_a_certificate_whose_files_disappear_keeps_serving(
        tls_gateway: TlsGatewayFactory, ca: TestCa) -> None:
    good = ca.issue("a.example.com")
    gw = await tls_gateway({"a": good})
    registry = gw.running.app[keys.METRICS].registry
    shutil.rmtree(gw.ca_file.parent / "a")
    await poll(lambda: _reloads(registry, "a", "missing") == 1, "the missing files noticed", 10)
    assert (await s_client(gw.tls_port, servername="a.example.com")).serial == good.serial


async def test_startup_refuses_a_certificate_it_cannot_serve_in_one_line_without_key_material(
        tmp_path: Path, ca: TestCa) -> None:
    folder = tmp_path
    good, other = ca.issue("a.example.com"), ca.issue("b.example.com")
    mount_secret(folder / "a", good)
    mount_secret(folder / "b", cert=other.cert_pem, key=good.key_pem)
    settings = ProxySettings(port=0, access_log=False, tls={"enabled": True, "port": 0, "certificates": [
        {"name": "a", "dir": str(folder / "a")}, {"name": "b", "dir": str(folder / "b")},
        {"name": "c", "dir": str(folder / "c")}]})
    with pytest.raises(SettingsError) as raised:
        await start_gateway(create_app(settings), "127.0.0.1", 0)
    message = str(raised.value)
    assert "\n" not in message
    assert "b: tls.key does not match the certificate" in message
    assert "c: " in message
    assert "does not exist" in message
    problems = message.split("cannot serve every certificate: ", 1)[1].split("; ")
    assert [p.split(":")[0] for p in problems] == ["b", "c"], "a good certificate was reported"
    assert "PRIVATE KEY" not in message
