"""Trust settings are precise: the one authority parser (tables and generated
authorities), trusted hosts normalised at load, trusted-proxy CIDRs validated
at load, CORS `*` with credentials refused at load, the admin listener's
settings checked, and JWT issuer keys that fit their algorithms."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from vocelio_proxy.pipeline.endpoints import ENDPOINTS
from vocelio_proxy.policy.authority import Authority, parse_authority
from vocelio_proxy.settings import GATEWAY_ENDPOINTS, AuthSettings, CorsSettings, JwtIssuer, ProxySettings


@pytest.mark.parametrize(("text", "parsed"), [
    ("api.example.com", Authority("api.example.com", None)),
    ("API.Example.COM", Authority("api.example.com", None)),
    ("api.example.com.", Authority("api.example.com", None)),
    ("api.example.com:8080", Authority("api.example.com", 8080)),
    ("api.example.com.:443", Authority("api.example.com", 443)),
    ("api.example.com:", Authority("api.example.com", None)),
    ("api.example.com:0080", Authority("api.example.com", 80)),
    ("10.1.2.3:80", Authority("10.1.2.3", 80)),
    ("[::1]:80", Authority("[::1]", 80)),
    ("[::1]", Authority("[::1]", None)),
    ("[::1]:", Authority("[::1]", None)),
    ("[2001:DB8:0:0::1]", Authority("[2001:db8::1]", None)),
    ("[::ffff:1.2.3.4]:8443", Authority("[::ffff:102:304]", 8443)),
    ("localhost", Authority("localhost", None)),
])
def test_authorities_parse_to_one_normalised_host_and_port(text: str, parsed: Authority) -> None:
    assert parse_authority(text) == parsed


@pytest.mark.parametrize("text", [
    "", ":80", "host:@evil", "host:@evil.com", "evil@host", "user:pass@host", "host:80:81", "host:http",
    "host:-1", "host:65536", "host:123456", "host:8 0", " host", "host ", "host/path", "host?q", "host#f",
    "ho%73t", "host\x00", "h\u00f4st", "[::1", "::1", "[::1]x", "[:::1]", "[fe80::1%25eth0]", "[::1]:x",
    "[v1.fe]", "[1.2.3.4]", "..", ".", "host..", "[::1]:80:81", "host\r\nX: y", "host\\evil",
])
def test_text_that_is_not_one_authority_is_refused(text: str) -> None:
    assert parse_authority(text) is None


LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
HOST = st.lists(LABEL, min_size=1, max_size=4).map(".".join)


@settings(max_examples=400, deadline=None)
@given(host=HOST, port=st.none() | st.integers(0, 65535), upper=st.booleans(), dot=st.booleans())
def test_generated_hosts_round_trip_through_case_trailing_dots_and_ports(host: str, port: int | None,
                                                                          upper: bool, dot: bool) -> None:
    text = (host.upper() if upper else host) + ("." if dot else "") + ("" if port is None else f":{port}")
    assert parse_authority(text) == Authority(host, port)
    assert parse_authority(str(Authority(host, port))) == Authority(host, port)


@settings(max_examples=600, deadline=None)
@given(st.text(st.characters(codec="latin-1"), max_size=30))
def test_whatever_parses_has_no_userinfo_path_or_whitespace_and_one_reading(text: str) -> None:
    parsed = parse_authority(text)
    if parsed is None:
        return
    assert not set(text) & set("@/?#% \t\r\n\\\x00")
    assert parsed.host == parsed.host.lower()
    assert parsed.host
    assert not parsed.host.endswith(".")
    assert parsed.port is None or 0 <= parsed.port <= 65535
    assert parse_authority(str(parsed)) == parsed  # normal form is a fixed point
    # The host is the text before the one colon outside an IPv6 literal, without case or root dot.
    head = text[:text.index("]") + 1] if text.startswith("[") else text.split(":")[0]
    if not head.startswith("["):
        assert parsed.host == head.lower().removesuffix(".")


@settings(max_examples=300, deadline=None)
@given(host=HOST, junk=st.text(st.characters(codec="latin-1"), min_size=1, max_size=8))
def test_a_trusted_host_followed_by_anything_but_a_port_is_not_that_host(host: str, junk: str) -> None:
    parsed = parse_authority(f"{host}:{junk}")
    assert parsed is None or (parsed.host == host and (junk == "" or junk.isdigit()))
    parsed = parse_authority(f"{junk}@{host}")
    assert parsed is None


def test_trusted_hosts_are_normalised_and_validated_at_load() -> None:
    assert ProxySettings(trusted_hosts=["API.Example.com.", "[::1]"]).trusted_hosts == ["api.example.com", "[::1]"]
    for bad in ("api.example.com:443", "user@api.example.com", "api.example.com/x", ""):
        with pytest.raises(ValidationError, match="trusted_hosts"):
            ProxySettings(trusted_hosts=[bad])


def test_trusted_proxy_cidrs_are_validated_at_load_with_a_clear_error() -> None:
    ok = ProxySettings(trusted_proxies=2, trusted_proxy_cidrs=["10.0.0.0/8", "fd00::/8", "192.0.2.7"])
    assert ok.trusted_proxy_cidrs == ["10.0.0.0/8", "fd00::/8", "192.0.2.7"]
    for bad in ("10.0.0.1/8", "10.0.0.0/33", "ten", "10.0.0.0/8 ", "::1/129"):
        with pytest.raises(ValidationError, match=r"trusted_proxy_cidrs: .* is not a network address"):
            ProxySettings(trusted_proxies=1, trusted_proxy_cidrs=[bad])
    with pytest.raises(ValidationError, match="needs trusted_proxies >= 1"):
        ProxySettings(trusted_proxy_cidrs=["10.0.0.0/8"])


def test_cors_wildcard_with_credentials_is_refused_at_load() -> None:
    with pytest.raises(ValidationError, match=r"'\*' cannot be combined with cors.allow_credentials"):
        CorsSettings(allow_origins=["*"], allow_credentials=True)
    with pytest.raises(ValidationError, match="cannot be combined"):
        ProxySettings(cors={"allow_origins": ["https://a.example", "*"], "allow_credentials": True})
    assert CorsSettings(allow_origins=["*"]).allow_origins == ["*"]
    assert CorsSettings(allow_origins=["https://app.example:8443"], allow_credentials=True).allow_credentials


@pytest.mark.parametrize("origin", ["null", "https://app.example/", "app.example", "https://app.example/x",
                                    "ftp://app.example", "https://*.example"])
def test_cors_origins_must_be_exact_origins(origin: str) -> None:
    with pytest.raises(ValidationError, match="is not an origin"):
        CorsSettings(allow_origins=[origin])


def test_the_admin_listener_settings_are_checked() -> None:
    assert ProxySettings().admin.port is None
    assert ProxySettings(admin={"port": 9090}).admin.public_endpoints == ["/health", "/livez", "/readyz"]
    with pytest.raises(ValidationError, match="is the public port"):
        ProxySettings(port=9090, admin={"port": 9090})
    with pytest.raises(ValidationError, match="is not a gateway endpoint"):
        ProxySettings(admin={"port": 9090, "public_endpoints": ["/health", "/livez", "/readyz", "/secret"]})
    with pytest.raises(ValidationError, match="must include /health"):
        ProxySettings(admin={"port": 9090, "public_endpoints": ["/livez", "/readyz"]})


def test_the_settings_know_every_gateway_endpoint() -> None:
    assert set(GATEWAY_ENDPOINTS) == set(ENDPOINTS)


def test_jwt_issuer_keys_must_fit_their_algorithms_at_load() -> None:
    with pytest.raises(ValidationError, match="accepts HS256 but has no secret"):
        JwtIssuer(issuer="i", algorithms=["HS256"])
    with pytest.raises(ValidationError, match="not a PEM RSA, P-256 or P-384 public key"):
        JwtIssuer(issuer="i", public_keys={"k": "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n"})
    for key in (ed25519.Ed25519PrivateKey.generate(), ec.generate_private_key(ec.SECP521R1())):
        pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        with pytest.raises(ValidationError, match="public key 'k'"):
            JwtIssuer(issuer="i", public_keys={"k": pem})


def test_the_auth_failure_limit_and_claim_encoding_have_safe_defaults() -> None:
    auth = AuthSettings()
    assert (auth.failure_limit.requests, auth.failure_limit.window_s) == (30, 60)
    assert auth.claim_encoding == "refuse"
    assert ProxySettings().headers_with_underscores == "drop"


def test_settings_that_do_not_load_give_one_line_naming_the_field(tmp_path: Path) -> None:
    import subprocess
    import sys

    from vocelio_proxy.settings import SettingsError, load_settings

    path = tmp_path / "settings.yaml"
    path.write_text("cors: {allow_origins: ['*'], allow_credentials: true}\n")
    with pytest.raises(SettingsError) as info:
        load_settings(path)
    assert str(info.value) == ("invalid settings: cors: cors.allow_origins '*' cannot be combined with "
                               "cors.allow_credentials: list the exact origins that may send credentials")
    result = subprocess.run([sys.executable, "-m", "vocelio_proxy.cli", "serve", "--settings", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"vocelio-proxy serve: {info.value}"]
