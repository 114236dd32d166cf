"""The TLS edge's pure parts and settings: SNI name matching, the HTTPS
redirect's Location, the server context's policy, certificate checks, and the
settings that refuse what cannot work."""

from __future__ import annotations

import ssl
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.harness.tls_tools import TestCa
from vocelio_proxy.policy.https_redirect import HttpsRedirect, forwarded_https
from vocelio_proxy.policy.sni import SniTable, normalise_name, normalise_pattern
from vocelio_proxy.process.tls_certificates import CertificateProblem, inspect_pair
from vocelio_proxy.settings import MOZILLA_INTERMEDIATE_CIPHERS, ProxySettings, TlsSettings
from vocelio_proxy.wire.tls import TlsPolicy, server_context


def _table() -> SniTable[str]:
    return SniTable([("exact", ["api.example.com", "*.eu.example.com"]), ("wild", ["*.example.com"]),
                     ("shadowed", ["api.example.com", "*.example.com"]), ("bad", ["a*.example.com", "*.com"])],
                    "default")


@pytest.mark.parametrize(("name", "chosen"), [
    ("api.example.com", "exact"), ("API.EXAMPLE.COM.", "exact"), ("web.example.com", "wild"),
    ("x.eu.example.com", "exact"), ("a.b.example.com", "default"), ("example.com", "default"),
    ("ab.example.com", "wild"), ("anything.com", "default"), (None, "default"), ("127.0.0.1", "default"),
    ("", "default"), ("bad..example.com", "default"), ("-x.example.com", "default"),
])
def test_a_server_name_gets_the_most_specific_certificate_or_the_default(name: str | None, chosen: str) -> None:
    assert _table().choose(name) == chosen


def test_an_ip_address_is_never_a_server_name_even_when_a_certificate_lists_it_as_dns() -> None:
    table = SniTable([("ip", ["127.0.0.1", "*.0.0.1"])], "default")
    assert table.choose("127.0.0.1") == "default"
    assert table.names() == []


def test_only_a_leading_star_label_over_two_labels_is_a_wildcard() -> None:
    assert normalise_pattern("*.Example.com.") == "*.example.com"
    for refused in ("a*.example.com", "*.com", "*", "*.*.example.com", "x.*.example.com"):
        assert normalise_pattern(refused) is None, refused
    assert _table().names() == ["api.example.com", "*.eu.example.com", "*.example.com"]


@given(st.text(max_size=80))
def test_any_server_name_string_is_answered_without_error(name: str) -> None:
    chosen = _table().choose(name)
    assert chosen in {"exact", "wild", "default"}
    normalised = normalise_name(name)
    if normalised is None:
        assert chosen == "default"


def test_the_redirect_location_keeps_the_host_asked_for_and_the_target_as_sent() -> None:
    redirect = HttpsRedirect(443, ["/readyz", "/.well-known/acme-challenge/"])
    assert redirect.location("API.example.com.:8080", "/a/%2e?x=%2F") == "https://api.example.com/a/%2e?x=%2F"
    assert HttpsRedirect(8443, []).location("[::1]:80", "/") == "https://[::1]:8443/"
    for bad in ("user@evil.example", "evil.example/path", "", "a b", "host:99999"):
        assert redirect.location(bad, "/") is None, bad
    assert redirect.exempt("/readyz")
    assert redirect.exempt("/.well-known/acme-challenge/token")
    assert not redirect.exempt("/readyz/x")
    assert forwarded_https(" HTTPS ")
    assert not forwarded_https("https, http")
    assert not forwarded_https(None)


def test_the_server_context_enforces_the_policy() -> None:
    ctx = server_context(TlsPolicy("TLSv1.2", MOZILLA_INTERMEDIATE_CIPHERS, ("http/1.1",), False))
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    for option in (ssl.OP_NO_COMPRESSION, ssl.OP_NO_RENEGOTIATION, ssl.OP_NO_TICKET):
        assert ctx.options & option, option
    tls12 = {c["name"] for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"}
    assert tls12
    assert all("GCM" in c or "CHACHA20" in c for c in tls12)
    assert all(c.startswith("ECDHE-") for c in tls12)
    strict = server_context(TlsPolicy("TLSv1.3", "", ("http/1.1",), True))
    assert strict.minimum_version == ssl.TLSVersion.TLSv1_3
    assert not strict.options & ssl.OP_NO_TICKET


def test_a_certificate_check_names_the_problem_and_never_the_key() -> None:
    ca = TestCa()
    good, other = ca.issue("a.example.com"), ca.issue("b.example.com")
    now = time.time()
    names, serial, not_after = inspect_pair(good.cert_pem, good.key_pem, now)
    assert names == ("a.example.com",)
    assert int(serial, 16) == good.serial
    assert not_after > now
    cases = {
        (other.cert_pem, good.key_pem): "does not match",
        (b"nothing", good.key_pem): "no PEM certificate",
        (good.cert_pem, b"nothing"): "no PEM private key",
        (good.cert_pem, good.key_pem.replace(b"PRIVATE KEY", b"RSA PRIVATE KEY")): "no PEM private key",
    }
    for (cert, key), reason in cases.items():
        with pytest.raises(CertificateProblem, match=reason) as raised:
            inspect_pair(cert, key, now)
        assert b"".join(good.key_pem.splitlines()[1:2]).decode()[:30] not in str(raised.value)
    with pytest.raises(CertificateProblem, match="expired"):
        inspect_pair(good.cert_pem, good.key_pem, now + 11 * 86400)
    with pytest.raises(CertificateProblem, match="not valid before"):
        inspect_pair(good.cert_pem, good.key_pem, now - 2 * 86400)


@pytest.mark.parametrize(("tls", "message"), [
    ({"enabled": True}, "needs at least one certificate"),
    ({"certificates": [{"name": "a"}]}, "exactly one of dir"),
    ({"certificates": [{"name": "a", "cert_file": "/x"}]}, "go together"),
    ({"certificates": [{"name": "a", "dir": "/x"}, {"name": "a", "dir": "/y"}]}, "duplicate name a"),
    ({"certificates": [{"name": "a", "dir": "/x"}], "default_certificate": "b"}, "not a listed certificate"),
    ({"source": "api", "certificates": [{"name": "a", "dir": "/x"}]}, "names a secret"),
    ({"certificates": [{"name": "a", "secret": "ns/s"}]}, "names files or a dir"),
    ({"alpn": ["http/1.1", "http/1.1"]}, "each protocol once"),
    ({"hsts": {"preload": True, "include_subdomains": False}}, "preload needs"),
    ({"redirect": {"exempt_paths": ["readyz"]}}, "is not a path"),
])
def test_tls_settings_that_cannot_work_are_refused(tls: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TlsSettings.model_validate(tls)


def test_the_tls_port_must_be_its_own() -> None:
    with pytest.raises(ValueError, match=r"tls\.port 8080 is taken"):
        ProxySettings(port=8080, tls={"enabled": True, "port": 8080, "certificates": [{"name": "a", "dir": "/x"}]})
    with pytest.raises(ValueError, match=r"offers h2 while http2\.enabled is false"):
        ProxySettings(http2={"enabled": False}, tls={"alpn": ["h2", "http/1.1"]})
    assert TlsSettings().alpn_protocols(http2=False) == ["http/1.1"]
    assert TlsSettings().alpn_protocols(http2=True) == ["h2", "http/1.1"]
    assert TlsSettings(alpn=["http/1.1"]).alpn_protocols(http2=True) == ["http/1.1"]
    assert TlsSettings().hsts.header() == "max-age=31536000; includeSubDomains"


def test_every_tls_metric_and_label_is_documented_in_observability() -> None:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from tests.harness.controlplane import ROOT
    from vocelio_proxy.process.tls_certificates import HandshakeFailures, TlsCertificates
    from vocelio_proxy.wire.tls import TlsEdge

    ca = TestCa()
    issued = ca.issue("a.example.com")
    settings = TlsSettings(certificates=[{"name": "a", "dir": "/unused"}])
    registry = CollectorRegistry()
    store = TlsCertificates(settings, TlsEdge(TlsPolicy()), registry, time.time)
    registry.register(HandshakeFailures(lambda: {"timeout": 1}))
    assert store.offer("a", issued.cert_pem, issued.key_pem)
    text = (ROOT / "docs" / "operations" / "observability.md").read_text()
    rows = {line.split("|")[1].strip().strip("`"): line for line in text.splitlines() if line.startswith("| `vocelio_")}
    families = list(text_string_to_metric_families(generate_latest(registry).decode()))
    assert {f.name for f in families} >= {"vocelio_tls_certificate_reloads", "vocelio_tls_handshake_failures",
                                          "vocelio_tls_certificate_expiry_timestamp_seconds"}
    for family in families:
        if family.name.endswith("_created"):
            continue
        name = family.name + ("_total" if family.type == "counter" else "")
        assert name in rows, name
        for label in {k for s in family.samples for k in s.labels}:
            assert f"`{label}`" in rows[name], (name, label)


def test_a_secret_yields_its_pair_only_when_it_is_a_well_formed_kubernetes_tls_secret() -> None:
    import base64
    from types import SimpleNamespace

    from vocelio_proxy.lifecycle.tls_secrets import secret_pair

    crt, key = b"-----BEGIN CERTIFICATE-----", b"-----BEGIN PRIVATE KEY-----"
    data = {"tls.crt": base64.b64encode(crt).decode(), "tls.key": base64.b64encode(key).decode()}
    assert secret_pair(SimpleNamespace(type="kubernetes.io/tls", data=data)) == (crt, key)
    cases = {
        "Opaque": (SimpleNamespace(type="Opaque", data=data), "not kubernetes.io/tls"),
        "no key": (SimpleNamespace(type="kubernetes.io/tls", data={"tls.crt": data["tls.crt"]}), "no tls.key"),
        "no data": (SimpleNamespace(type="kubernetes.io/tls", data=None), "no tls.crt"),
        "not base64": (SimpleNamespace(type="kubernetes.io/tls", data={**data, "tls.key": "%%%"}), "not base64"),
    }
    for what, (secret, reason) in cases.items():
        problem = secret_pair(secret)
        assert isinstance(problem, str), what
        assert reason in problem, what
        assert "PRIVATE" not in problem
