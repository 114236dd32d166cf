"""Forwarded header policy: hop-by-hop, identity stripping in every spelling,
trusted proxies (hops and CIDRs), X-Forwarded-*, tracing."""

import re

import pytest

from vocelio_proxy.policy.forwarded_headers import (
    ForwardedTrust,
    accept_request_id,
    client_address,
    downstream_response_headers,
    is_respelled_owned,
    response_head,
    upstream_request_headers,
)
from vocelio_proxy.policy.tracecontext import propagate


def build_list(headers: list[tuple[str, str]], trusted: int = 0) -> list[tuple[str, str]]:
    return upstream_request_headers(headers, remote="203.0.113.9", scheme="http", host="gw.example",
                                    trusted_hops=trusted, request_id="req_1", traceparent="tp",
                                    identity={"X-Vocelio-User": "u1"})


def build(headers: list[tuple[str, str]], trusted: int = 0) -> dict[str, str]:
    return {k.lower(): v for k, v in build_list(headers, trusted)}


def test_hop_by_hop_and_connection_listed_headers_are_dropped() -> None:
    h = build([("Connection", "keep-alive, X-Secret"), ("X-Secret", "1"), ("Keep-Alive", "5"),
               ("TE", "trailers"), ("Accept", "*/*")])
    assert "x-secret" not in h
    assert "keep-alive" not in h
    assert "te" not in h
    assert "connection" not in h
    assert h["accept"] == "*/*"


def test_client_sent_identity_headers_are_replaced_by_the_gateways() -> None:
    h = build([("X-Vocelio-User", "admin"), ("X-Vocelio-Roles", "admin"), ("x-vocelio-tenant", "other")])
    assert h["x-vocelio-user"] == "u1"
    assert "x-vocelio-roles" not in h
    assert "x-vocelio-tenant" not in h


def test_forwarded_for_is_not_trusted_without_trusted_proxies() -> None:
    h = build([("X-Forwarded-For", "1.2.3.4"), ("X-Forwarded-Proto", "https")])
    assert h["x-forwarded-for"] == "203.0.113.9"
    assert h["x-forwarded-proto"] == "http"


def test_behind_a_trusted_proxy_the_upstream_gets_one_client_address_and_the_proxys_proto() -> None:
    h = build([("X-Forwarded-For", "6.6.6.6, 1.2.3.4"), ("X-Forwarded-Proto", "https"),
               ("X-Forwarded-Host", "API.Example.com.")], trusted=1)
    assert h["x-forwarded-for"] == "203.0.113.9"  # `remote` is the client the pipeline determined
    assert h["x-forwarded-proto"] == "https"
    assert h["x-forwarded-host"] == "api.example.com"


@pytest.mark.parametrize(("claims", "proto", "host"), [
    ([("X-Forwarded-Proto", "gopher")], "http", "gw.example"),
    ([("X-Forwarded-Proto", "https, http")], "http", "gw.example"),
    ([("X-Forwarded-Proto", "https"), ("X-Forwarded-Proto", "http")], "http", "gw.example"),
    ([("X-Forwarded-Host", "good.example:@evil")], "http", "gw.example"),
    ([("X-Forwarded-Host", "a.example, b.example")], "http", "gw.example"),
])
def test_a_trusted_proxys_forwarded_values_count_only_when_they_have_one_meaning(
        claims: list[tuple[str, str]], proto: str, host: str) -> None:
    h = build(claims, trusted=1)
    assert (h["x-forwarded-proto"], h["x-forwarded-host"]) == (proto, host)


def test_each_forwarded_header_is_sent_exactly_once() -> None:
    sent = build_list([("X-Forwarded-For", "1.1.1.1"), ("x-forwarded-for", "2.2.2.2"), ("Forwarded", "for=3.3.3.3"),
                       ("X-Real-IP", "4.4.4.4"), ("X_Forwarded_For", "5.5.5.5"), ("X-Request-ID", "theirs")], 1)
    names = [k.lower() for k, _ in sent]
    for name in ("x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-request-id", "traceparent"):
        assert names.count(name) == 1, name
    assert not {"forwarded", "x-real-ip", "x_forwarded_for"} & set(names)


@pytest.mark.parametrize("name", [
    "X_Vocelio_User", "X-Vocelio_Tenant", "x_vocelio-roles", "X_VOCELIO_NEW_THING", "X-Forwarded_For",
    "X_Forwarded_Proto", "X_Forwarded-Host", "X_Request_ID", "X_Real_IP", "Content_Length", "Transfer_Encoding",
    "X_API_Key", "Proxy_Authorization", "Keep_Alive",
])
def test_underscore_spellings_of_owned_names_never_reach_the_upstream(name: str) -> None:
    h = build([(name, "smuggled"), ("X_Custom_Thing", "kept")])
    assert "smuggled" not in h.values()
    assert h["x_custom_thing"] == "kept"  # other underscore names are the pipeline's decision
    assert is_respelled_owned(name.lower())


def test_names_without_underscores_or_unowned_are_not_respelled() -> None:
    assert not is_respelled_owned("x-vocelio-user")  # the real name is handled by the prefix rule
    assert not is_respelled_owned("x_custom")
    assert not is_respelled_owned("user_agent_hint")


def test_client_address_walks_only_trusted_hops() -> None:
    assert client_address("10.0.0.1", "6.6.6.6", 0) == "10.0.0.1"
    assert client_address("10.0.0.1", "6.6.6.6, 1.2.3.4", 1) == "1.2.3.4"
    assert client_address("10.0.0.1", "6.6.6.6, 1.2.3.4", 2) == "6.6.6.6"
    assert client_address("10.0.0.1", "6.6.6.6, 1.2.3.4", 5) == "6.6.6.6"  # all trusted: the leftmost
    assert client_address("10.0.0.1", "garbage", 1) == "10.0.0.1"
    assert client_address("10.0.0.1", "garbage, 1.2.3.4", 3) == "1.2.3.4"  # the walk stops at garbage


LB = ["10.0.0.0/8", "fd00::/8"]


@pytest.mark.parametrize(("peer", "xff", "client"), [
    ("10.1.1.1", "203.0.113.7", "203.0.113.7"),  # one trusted balancer
    ("10.1.1.1", "203.0.113.7, 10.2.2.2, 10.3.3.3", "203.0.113.7"),  # proxies inside the ranges are skipped
    ("10.1.1.1", "6.6.6.6, 203.0.113.7, 10.2.2.2", "203.0.113.7"),  # the first untrusted wins, spoofs left of it lose
    ("198.51.100.1", "203.0.113.7", "198.51.100.1"),  # an untrusted peer's header means nothing
    ("10.1.1.1", "10.2.2.2, 10.3.3.3", "10.2.2.2"),  # every hop trusted: the leftmost
    ("10.1.1.1", "203.0.113.7:443, 10.2.2.2", "10.2.2.2"),  # not an address: the nearest hop to its right
    ("10.1.1.1", "", "10.1.1.1"),
    ("10.1.1.1", "2001:db8::1, fd00::5", "2001:db8::1"),
    ("::ffff:10.1.1.1", "203.0.113.7", "203.0.113.7"),  # an IPv4-mapped peer is its IPv4 address
    ("10.1.1.1", "::ffff:10.2.2.2, 203.0.113.7", "203.0.113.7"),
    # at most `hops` (3) trusted proxies: the peer and two more; the next address is the client
    ("10.1.1.1", "1.1.1.1, 10.2.2.2, 10.3.3.3, 10.4.4.4, 10.5.5.5", "10.3.3.3"),
])
def test_cidr_trust_walks_forwarded_for_from_the_right_like_nginx_realip(peer: str, xff: str, client: str) -> None:
    trust = ForwardedTrust(3, LB)
    assert trust.client(peer, xff) == client


def test_only_peers_inside_the_cidrs_are_trusted_proxies() -> None:
    trust = ForwardedTrust(2, LB)
    assert trust.peer_trusted("10.9.9.9")
    assert trust.peer_trusted("fd00::1")
    assert trust.peer_trusted("::ffff:10.0.0.1")
    assert not trust.peer_trusted("198.51.100.1")
    assert not trust.peer_trusted("not-an-ip")
    assert ForwardedTrust(1).peer_trusted("198.51.100.1")  # hop count only: whoever is in front
    assert not ForwardedTrust(0, []).peer_trusted("10.0.0.1")


def test_request_ids_are_propagated_when_well_formed() -> None:
    assert accept_request_id("abc-123") == "abc-123"
    assert accept_request_id("bad id\r\n").startswith("req_")
    assert accept_request_id(None).startswith("req_")


def test_minted_request_ids_are_24_hex_digits_and_distinct() -> None:
    minted = {accept_request_id(None) for _ in range(200)}
    assert len(minted) == 200
    assert all(re.fullmatch(r"req_[0-9a-f]{24}", rid) for rid in minted)


def test_a_valid_traceparent_passes_through_unchanged_and_junk_starts_a_trace() -> None:
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert propagate(parent, None) == (parent, None)
    fresh, state = propagate("junk", "a=1")
    assert re.match(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-01$", fresh)
    assert state is None


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
    assert head.content_type == "text/plain"
    assert head.declared_length == 12
