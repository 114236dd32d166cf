"""Host routing through the real gateway to real backends (docs/host-routing.md): the
`Host` header and an absolute-form target's authority (which replaces `Host`, and is
also what the upstream is sent) choose among exact, wildcard and host-less services;
gateway endpoint paths give way to a service routing them on its host; /status and
/docs show hosts; the access log carries the host."""

from __future__ import annotations

import io
import json
from typing import Any

from tests.harness.app_fixtures import GatewayFactory, UpstreamFactory, poll, service
from tests.harness.hostile import raw_request
from vocelio_contract.config import GatewayConfig
from vocelio_proxy.lifecycle import appkeys as keys


async def hosted(upstream_factory: UpstreamFactory, gateway_factory: GatewayFactory, **kw: Any) -> Any:
    exact, wild, plain = [await upstream_factory(name=n) for n in ("exact", "wild", "plain")]
    config = GatewayConfig(services=[
        service("exact", exact.endpoint(), prefixes=["/"], hosts=["api.example.com"], rewrite=None),
        service("wild", wild.endpoint(), prefixes=["/shop"], hosts=["*.example.com"], rewrite=None),
        service("plain", plain.endpoint(), prefixes=["/shop", "/other"], rewrite=None),
    ])
    return await gateway_factory(config, **kw)


async def test_the_host_header_chooses_the_service(upstream_factory: UpstreamFactory,
                                                   gateway_factory: GatewayFactory) -> None:
    gw = await hosted(upstream_factory, gateway_factory)
    cases = {
        ("api.example.com", "/shop/x"): "exact",  # the exact host's / beats the wildcard's longer /shop
        ("API.Example.com.:8080", "/shop/x"): "exact",
        ("web.example.com", "/shop/x"): "wild",
        ("web.example.com", "/other"): "plain",  # the wildcard host has no /other: falls to the host-less group
        ("example.com", "/shop/x"): "plain",  # a wildcard never matches the bare domain
        ("127.0.0.1", "/shop/x"): "plain",
        ("[::1]:80", "/shop/x"): "plain",
    }
    for (host, path), expected in cases.items():
        status, _, body = await gw.get(path, headers={"Host": host})
        assert status == 200, (host, path, status)
        assert json.loads(body)["upstream"] == expected, (host, path)
    status, _, _ = await gw.get("/nothing", headers={"Host": "web.example.com"})
    assert status == 404


async def test_an_absolute_form_target_routes_by_its_own_authority_and_sends_it_upstream(
        upstream_factory: UpstreamFactory, gateway_factory: GatewayFactory) -> None:
    gw = await hosted(upstream_factory, gateway_factory)
    answer = await raw_request(gw.port, b"GET http://api.example.com/shop/x HTTP/1.1\r\nHost: web.example.com\r\n"
                                        b"Connection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 ")
    sent = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert sent["upstream"] == "exact"
    assert sent["headers"]["Host"] == "api.example.com"  # one meaning: what was routed is what the backend sees


async def test_gateway_endpoints_answer_on_other_hosts_and_give_way_on_a_host_that_routes_them(
        upstream_factory: UpstreamFactory, gateway_factory: GatewayFactory) -> None:
    gw = await hosted(upstream_factory, gateway_factory)
    status, _, body = await gw.get("/status", headers={"Host": "api.example.com"})
    assert status == 200
    assert json.loads(body)["upstream"] == "exact"
    status, _, body = await gw.get("/status", headers={"Host": "web.example.com"})
    assert status == 200
    services = {s["name"]: s for s in json.loads(body)["services"]}
    assert services["exact"]["hosts"] == ["api.example.com"]
    assert services["plain"]["hosts"] == []
    status, _, page = await gw.get("/docs", headers={"Host": "other.org"})
    assert status == 200
    assert b"*.example.com" in page
    assert b"(any other host)" in page


async def test_the_access_log_carries_the_host_as_sent(upstream_factory: UpstreamFactory,
                                                       gateway_factory: GatewayFactory) -> None:
    sink = io.BytesIO()
    gw = await hosted(upstream_factory, gateway_factory, access_log_sink=sink, access_log=True)
    await raw_request(gw.port, b'GET /shop/x HTTP/1.1\r\nHost: Web.Example.com:8080\r\nX-Request-ID: host-1\r\n'
                               b"Connection: close\r\n\r\n")
    await poll(lambda: gw.app[keys.METRICS].in_flight_count == 0, "the request ended")
    gw.app[keys.ACCESS_LOG].flush()
    (line,) = [line for line in sink.getvalue().decode().splitlines() if "host-1" in line]
    entry = json.loads(line)
    assert entry["host"] == "Web.Example.com:8080"
    assert entry["service"] == "wild"


async def test_hostile_spellings_of_a_named_host_never_reach_its_service(upstream_factory: UpstreamFactory,
                                                                         gateway_factory: GatewayFactory) -> None:
    """Each spelling is refused by the reader (400) or, being no RFC 1123 name once
    normalised, served by the host-less services: never by api.example.com's. (Spaces
    around a field value are not part of it, RFC 9110 5.5: `api.example.com ` is the name.)"""
    gw = await hosted(upstream_factory, gateway_factory)
    spellings = [b"ap%69.example.com", b"api_.example.com", b"api.example.com..", b"api.example.com:80x",
                 b"api .example.com", b"api\t.example.com", b"[::1]", b"api.example.com@evil", b"\xe1pi.example.com",
                 b"a" * 64 + b".example.com", b"api.example.\xe2\x84\xaaom"]
    for spelling in spellings:
        answer = await raw_request(gw.port, b"GET /shop/x HTTP/1.1\r\nHost: " + spelling
                                   + b"\r\nConnection: close\r\n\r\n")
        status = answer.split(b" ", 2)[1]
        assert status in (b"200", b"400"), (spelling, answer[:80])
        if status == b"200":
            assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["upstream"] == "plain", spelling
    for target in (b"http://ap%69.example.com/shop/x", b"http://api_.example.com/shop/x"):
        answer = await raw_request(gw.port, b"GET " + target + b" HTTP/1.1\r\nHost: api.example.com\r\n"
                                            b"Connection: close\r\n\r\n")
        status = answer.split(b" ", 2)[1]
        assert status in (b"200", b"400"), (target, answer[:80])
        if status == b"200":
            assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["upstream"] == "plain", target
