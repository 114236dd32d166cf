"""The TLS listener as real clients see it: `openssl s_client` for SNI
selection, versions and ALPN; HTTPS requests for X-Forwarded-Proto and HSTS;
plain requests for the HTTPS redirect."""

from __future__ import annotations

import asyncio
import json

import aiohttp
from aiohttp import web
from yarl import URL

from tests.harness.tls_fixtures import TlsGatewayFactory
from tests.harness.tls_tools import TestCa, TlsClient, s_client


async def test_sni_chooses_the_exact_name_then_the_wildcard_then_the_default(
        tls_gateway: TlsGatewayFactory, ca: TestCa) -> None:
    default, exact, wildcard = ca.issue("default.test"), ca.issue("a.example.com"), ca.issue("*.example.com")
    gw = await tls_gateway({"default": default, "wild": wildcard, "exact": exact})
    expected = {"a.example.com": exact, "A.Example.COM": exact, "b.example.com": wildcard,
                "x.y.example.com": default, "example.com": default, "unknown.test": default}
    for name, issued in expected.items():
        handshake = await s_client(gw.tls_port, servername=name, ca_file=gw.ca_file)
        assert handshake.ok, handshake.output[-800:]
        assert handshake.serial == issued.serial, f"{name}: served the wrong certificate"


async def test_a_client_without_sni_gets_the_default_certificate(
        tls_gateway: TlsGatewayFactory, ca: TestCa) -> None:
    first, chosen = ca.issue("a.example.com"), ca.issue("fallback.test")
    gw = await tls_gateway({"first": first, "fallback": chosen}, tls={"default_certificate": "fallback"})
    handshake = await s_client(gw.tls_port, servername=None)
    assert handshake.serial == chosen.serial


async def test_tls_1_0_and_1_1_are_refused_and_1_2_and_1_3_are_served(
        tls_gateway: TlsGatewayFactory, ca: TestCa) -> None:
    gw = await tls_gateway({"a": ca.issue("a.example.com")})
    for old in ("-tls1", "-tls1_1"):
        refused = await s_client(gw.tls_port, old, "-cipher", "DEFAULT:@SECLEVEL=0", servername="a.example.com")
        assert not refused.ok, f"{old} was accepted"
    for version, flag in (("TLSv1.2", "-tls1_2"), ("TLSv1.3", "-tls1_3")):
        served = await s_client(gw.tls_port, flag, servername="a.example.com", ca_file=gw.ca_file)
        assert served.ok, served.output[-800:]
        assert served.protocol == version


async def test_tls_1_2_offers_only_forward_secret_aead_ciphers(
        tls_gateway: TlsGatewayFactory, ca: TestCa) -> None:
    gw = await tls_gateway({"a": ca.issue("a.example.com")})
    for weak in ("AES128-SHA", "AES256-GCM-SHA384", "ECDHE-RSA-AES128-SHA", "ECDHE-ECDSA-AES128-SHA256"):
        refused = await s_client(gw.tls_port, "-tls1_2", "-cipher", weak, servername="a.example.com")
        assert not refused.ok, f"{weak} was accepted"
    strong = await s_client(gw.tls_port, "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256",
                            servername="a.example.com", ca_file=gw.ca_file)
    assert strong.ok, strong.output[-800:]


async def test_alpn_prefers_h2_when_http2_is_on_and_never_claims_it_when_off(
        tls_gateway: TlsGatewayFactory, ca: TestCa) -> None:
    on = await tls_gateway({"a": ca.issue("a.example.com")})
    both = await s_client(on.tls_port, "-alpn", "h2,http/1.1", servername="a.example.com", ca_file=on.ca_file)
    assert both.ok
    assert both.alpn == "h2"
    only_h1 = await s_client(on.tls_port, "-alpn", "http/1.1", servername="a.example.com", ca_file=on.ca_file)
    assert only_h1.alpn == "http/1.1"
    off = await tls_gateway({"a": ca.issue("a.example.com")}, http2={"enabled": False})
    both = await s_client(off.tls_port, "-alpn", "h2,http/1.1", servername="a.example.com", ca_file=off.ca_file)
    assert both.alpn == "http/1.1"
    only_h2 = await s_client(off.tls_port, "-alpn", "h2", servername="a.example.com", ca_file=off.ca_file)
    assert only_h2.alpn is None, "h2 was selected by a server with HTTP/2 off"


async def test_curl_speaks_http2_over_the_tls_listener_through_the_pipeline(
        tls_gateway: TlsGatewayFactory, ca: TestCa) -> None:
    gw = await tls_gateway({"a": ca.issue("a.example.com")})
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sS", "--http2", "--cacert", str(gw.ca_file), "--resolve", f"a.example.com:{gw.tls_port}:127.0.0.1",
        "-o", "-", "-w", "\n%{http_version} %{http_code}", f"https://a.example.com:{gw.tls_port}/api/echo/x",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    body, _, summary = out.decode().rpartition("\n")
    assert summary == "2 200", err.decode()
    assert json.loads(body)["headers"]["X-Forwarded-Proto"] == "https"


async def test_an_https_request_reaches_the_upstream_with_x_forwarded_proto_https(
        tls_gateway: TlsGatewayFactory, ca: TestCa) -> None:
    gw = await tls_gateway({"a": ca.issue("a.example.com")})
    client = await TlsClient.connect(gw.tls_port, gw.ca_file)
    try:
        status, _, body = await client.request("/api/echo/x", headers={"X-Forwarded-Proto": "http"})
    finally:
        await client.close()
    assert status == 200
    sent = json.loads(body)["headers"]
    assert sent["X-Forwarded-Proto"] == "https", "an untrusted client chose the scheme the upstream saw"
    async with aiohttp.ClientSession() as session, session.get(
            f"http://127.0.0.1:{gw.port}/api/echo/x", headers={"X-Forwarded-Proto": "https"}) as resp:
        assert (await resp.json())["headers"]["X-Forwarded-Proto"] == "http"


async def test_a_trusted_proxy_still_names_the_scheme_on_the_tls_listener(
        tls_gateway: TlsGatewayFactory, ca: TestCa) -> None:
    gw = await tls_gateway({"a": ca.issue("a.example.com")}, trusted_proxies=1,
                           trusted_proxy_cidrs=["127.0.0.0/8"])
    client = await TlsClient.connect(gw.tls_port, gw.ca_file)
    try:
        _, _, body = await client.request("/api/echo/x", headers={"X-Forwarded-Proto": "http"})
    finally:
        await client.close()
    assert json.loads(body)["headers"]["X-Forwarded-Proto"] == "http"


async def test_hsts_is_on_every_https_answer_and_never_on_plain_http(
        tls_gateway: TlsGatewayFactory, ca: TestCa) -> None:
    gw = await tls_gateway({"a": ca.issue("a.example.com")},
                           tls={"hsts": {"max_age_s": 63072000, "include_subdomains": True, "preload": True}})
    want = "max-age=63072000; includeSubDomains; preload"
    client = await TlsClient.connect(gw.tls_port, gw.ca_file)
    try:
        for path in ("/api/echo/x", "/no/such/route", "/readyz"):
            _, headers, _ = await client.request(path)
            assert headers.get("strict-transport-security") == want, f"{path}: {headers}"
    finally:
        await client.close()
    async with aiohttp.ClientSession() as session:
        for path in ("/api/echo/x", "/no/such/route", "/readyz"):
            async with session.get(f"http://127.0.0.1:{gw.port}{path}") as resp:
                assert "Strict-Transport-Security" not in resp.headers, path


async def test_hsts_follows_a_trusted_proxys_https_on_the_plain_listener_only(
        tls_gateway: TlsGatewayFactory, ca: TestCa) -> None:
    gw = await tls_gateway({"a": ca.issue("a.example.com")}, trusted_proxies=1,
                           trusted_proxy_cidrs=["10.0.0.0/8"])
    url = f"http://127.0.0.1:{gw.port}/readyz"
    async with aiohttp.ClientSession() as session, session.get(url, headers={"X-Forwarded-Proto": "https"}) as resp:
        assert "Strict-Transport-Security" not in resp.headers, "an untrusted peer's claim turned HSTS on"
    gw2 = await tls_gateway({"a": ca.issue("a.example.com")}, trusted_proxies=1,
                            trusted_proxy_cidrs=["127.0.0.0/8"])
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{gw2.port}/readyz",
                           headers={"X-Forwarded-Proto": "https"}) as resp:
        assert resp.headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"


async def test_an_upstreams_own_hsts_is_kept_and_hsts_can_be_turned_off(
        tls_gateway: TlsGatewayFactory, ca: TestCa) -> None:
    async def upstream_sets_its_own(request: web.Request) -> web.Response:
        return web.Response(text="ok", headers={"Strict-Transport-Security": "max-age=0"})

    gw = await tls_gateway({"a": ca.issue("a.example.com")}, handler=upstream_sets_its_own)
    off = await tls_gateway({"a": ca.issue("a.example.com")}, tls={"hsts": {"enabled": False}})
    client = await TlsClient.connect(gw.tls_port, gw.ca_file)
    other = await TlsClient.connect(off.tls_port, off.ca_file)
    try:
        _, headers, _ = await client.request("/api/echo/x")
        assert headers["strict-transport-security"] == "max-age=0", "the upstream's header was not kept alone"
        _, headers, _ = await other.request("/readyz")
        assert "strict-transport-security" not in headers
    finally:
        await client.close()
        await other.close()


async def test_plain_requests_are_redirected_with_308_except_the_probes(
        tls_gateway: TlsGatewayFactory, ca: TestCa) -> None:
    gw = await tls_gateway({"a": ca.issue("a.example.com")},
                           tls={"redirect": {"enabled": True, "port": 8443}}, admin={"port": 0})
    async with aiohttp.ClientSession() as session:
        for method in ("GET", "POST"):
            async with session.request(method, URL(f"http://127.0.0.1:{gw.port}/api/echo/x?q=%2F1", encoded=True),
                                       headers={"Host": "API.Example.com:8080"}, allow_redirects=False) as resp:
                assert resp.status == 308
                assert resp.headers["Location"] == "https://api.example.com:8443/api/echo/x?q=%2F1"
        assert gw.upstream.hits == [], "a redirected request was proxied"
        for probe in ("/readyz", "/livez", "/health"):
            async with session.get(f"http://127.0.0.1:{gw.port}{probe}", allow_redirects=False) as resp:
                assert resp.status == 200, probe
        admin = gw.running.admin_port
        async with session.get(f"http://127.0.0.1:{admin}/status", allow_redirects=False) as resp:
            assert resp.status == 200
    client = await TlsClient.connect(gw.tls_port, gw.ca_file)
    try:
        status, _, _ = await client.request("/api/echo/x")
    finally:
        await client.close()
    assert status == 200, "the TLS listener redirected to itself"


async def test_the_redirect_keeps_a_trusted_proxys_https_and_refuses_bad_hosts(
        tls_gateway: TlsGatewayFactory, ca: TestCa) -> None:
    gw = await tls_gateway({"a": ca.issue("a.example.com")}, tls={"redirect": {"enabled": True}},
                           trusted_proxies=1, trusted_proxy_cidrs=["127.0.0.0/8"], trusted_hosts=["a.example.com"])
    url = f"http://127.0.0.1:{gw.port}/api/echo/x"
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers={"Host": "a.example.com", "X-Forwarded-Proto": "https"},
                               allow_redirects=False) as resp:
            assert resp.status == 200, "a request that arrived over https at the proxy in front was redirected"
        async with session.get(url, headers={"Host": "a.example.com"}, allow_redirects=False) as resp:
            assert resp.status == 308
            assert resp.headers["Location"] == "https://a.example.com/api/echo/x"
        async with session.get(url, headers={"Host": "evil.example"}, allow_redirects=False) as resp:
            assert resp.status == 421
            assert "Location" not in resp.headers


async def test_an_untrusted_peers_https_claim_does_not_skip_the_redirect(
        tls_gateway: TlsGatewayFactory, ca: TestCa) -> None:
    gw = await tls_gateway({"a": ca.issue("a.example.com")}, tls={"redirect": {"enabled": True}},
                           trusted_proxies=1, trusted_proxy_cidrs=["10.0.0.0/8"])
    async with aiohttp.ClientSession() as session, session.get(
            f"http://127.0.0.1:{gw.port}/api/echo/x", headers={"Host": "a.example.com", "X-Forwarded-Proto": "https"},
            allow_redirects=False) as resp:
        assert resp.status == 308
    assert gw.upstream.hits == []
