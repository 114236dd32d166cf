"""Forwarded header policy: hop-by-hop, identity stripping, trusted proxies, tracing."""

import re

from vocelio_proxy.forwarding import (
    accept_request_id,
    child_traceparent,
    client_address,
    downstream_response_headers,
    response_head,
    upstream_request_headers,
)


def build(headers: list[tuple[str, str]], trusted: int = 0) -> dict[str, str]:
    out = upstream_request_headers(headers, remote="203.0.113.9", scheme="http", host="gw.example",
                                   trusted_hops=trusted, request_id="req_1", traceparent="tp",
                                   identity={"X-Vocelio-User": "u1"})
    return {k.lower(): v for k, v in out}


def test_hop_by_hop_and_connection_listed_headers_are_dropped() -> None:
    h = build([("Connection", "keep-alive, X-Secret"), ("X-Secret", "1"), ("Keep-Alive", "5"),
               ("TE", "trailers"), ("Accept", "*/*")])
    assert "x-secret" not in h and "keep-alive" not in h and "te" not in h and "connection" not in h
    assert h["accept"] == "*/*"


def test_client_sent_identity_headers_are_replaced_by_the_gateways() -> None:
    h = build([("X-Vocelio-User", "admin"), ("X-Vocelio-Roles", "admin"), ("x-vocelio-tenant", "other")])
    assert h["x-vocelio-user"] == "u1"
    assert "x-vocelio-roles" not in h and "x-vocelio-tenant" not in h


def test_forwarded_for_is_not_trusted_without_trusted_proxies() -> None:
    h = build([("X-Forwarded-For", "1.2.3.4"), ("X-Forwarded-Proto", "https")])
    assert h["x-forwarded-for"] == "203.0.113.9"
    assert h["x-forwarded-proto"] == "http"


def test_forwarded_for_is_extended_behind_a_trusted_proxy() -> None:
    h = build([("X-Forwarded-For", "1.2.3.4"), ("X-Forwarded-Proto", "https")], trusted=1)
    assert h["x-forwarded-for"] == "1.2.3.4, 203.0.113.9"
    assert h["x-forwarded-proto"] == "https"


def test_client_address_walks_only_trusted_hops() -> None:
    assert client_address("10.0.0.1", "6.6.6.6", 0) == "10.0.0.1"
    assert client_address("10.0.0.1", "6.6.6.6, 1.2.3.4", 1) == "1.2.3.4"
    assert client_address("10.0.0.1", "6.6.6.6, 1.2.3.4", 2) == "6.6.6.6"
    assert client_address("10.0.0.1", "garbage", 1) == "10.0.0.1"


def test_request_ids_are_propagated_when_well_formed() -> None:
    assert accept_request_id("abc-123") == "abc-123"
    assert accept_request_id("bad id\r\n").startswith("req_")
    assert accept_request_id(None).startswith("req_")


def test_traceparent_keeps_the_trace_and_replaces_the_span() -> None:
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    child = child_traceparent(parent)
    assert child.startswith("00-0af7651916cd43dd8448eb211c80319c-")
    assert not child.endswith("b7ad6b7169203331-01")
    fresh = child_traceparent("junk")
    assert re.match(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-01$", fresh)


def test_response_framing_headers_are_left_to_the_server() -> None:
    out = dict(downstream_response_headers([("Content-Length", "3"), ("Transfer-Encoding", "chunked"),
                                            ("X-App", "1"), ("Set-Cookie", "a=b")]))
    assert out == {"X-App": "1", "Set-Cookie": "a=b"}


def test_backend_banners_and_request_ids_do_not_reach_clients() -> None:
    head = response_head([("Server", "gunicorn/21"), ("X-Powered-By", "Express"), ("X-Request-ID", "theirs"),
                          ("Connection", "close, X-Internal"), ("X-Internal", "1"), ("Content-Type", "text/plain"),
                          ("Content-Length", "12")])
    assert head.headers == [("Content-Type", "text/plain")]
    assert head.present == {"content-type"}
    assert head.content_type == "text/plain" and head.declared_length == 12
