"""The upgrade policy as plain functions: which protocols are offered upstream,
and which 101 answers are honoured."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from vocelio_contract.config import Service
from vocelio_proxy.policy.upgrades import (
    offered_upgrade,
    offers_websocket,
    switch_problem,
    valid_websocket_key,
    websocket_accept,
)

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # RFC 6455 section 1.3
GOOD = [("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Accept", ACCEPT)]


def test_the_accept_value_is_the_one_rfc_6455_gives_for_its_sample_key() -> None:
    assert websocket_accept(KEY) == ACCEPT


@pytest.mark.parametrize(("header", "allowed", "offered"), [
    ("websocket", ["websocket"], "websocket"),
    ("WebSocket", ["websocket"], "WebSocket"),
    ("websocket/13", ["websocket"], "websocket/13"),
    ("h2c", ["websocket"], None),
    ("h2c", ["h2c"], None),  # never, even if a config slipped it past validation
    ("H2C/1, websocket", ["websocket"], "websocket"),
    ("websocket, h2c", ["websocket", "h2c"], "websocket"),
    ("foo", ["websocket"], None),
    ("foo/2", ["foo/2"], "foo/2"),
    ("foo/3", ["foo/2"], None),
    ("web socket", ["websocket"], None),
    ("", ["websocket"], None),
    (" , ,", ["websocket"], None),
    ("websocket", [], None),
])
def test_only_allowed_protocols_are_offered_upstream(header: str, allowed: list[str], offered: str | None) -> None:
    assert offered_upgrade(allowed, header) == offered


@given(st.text(alphabet=st.sampled_from("hH2cC, /websockEtfoo\t;=\"x"), max_size=40))
def test_nothing_offered_is_h2c_or_outside_the_allowed_list(header: str) -> None:
    offered = offered_upgrade(["websocket", "foo"], header)
    if offered is None:
        return
    for protocol in offered.split(", "):
        name = protocol.lower().split("/")[0]
        assert name in ("websocket", "foo")


def test_websocket_keys_must_be_base64_of_sixteen_bytes() -> None:
    assert valid_websocket_key(KEY)
    assert not valid_websocket_key(None)
    assert not valid_websocket_key("")
    assert not valid_websocket_key("c2hvcnQ=")  # "short"
    assert not valid_websocket_key("not base64!!")
    assert offers_websocket("foo, WebSocket/13")
    assert not offers_websocket("foo")


def test_a_valid_websocket_switch_is_accepted() -> None:
    assert switch_problem("websocket", GOOD, KEY) is None
    assert switch_problem("WebSocket", [("upgrade", "WEBSOCKET"), ("connection", "keep-alive, upgrade"),
                                        ("sec-websocket-accept", ACCEPT)], KEY) is None


@pytest.mark.parametrize(("offered", "headers"), [
    ("websocket", [("Connection", "Upgrade"), ("Sec-WebSocket-Accept", ACCEPT)]),  # no Upgrade
    ("websocket", [("Upgrade", "websocket, foo"), ("Connection", "Upgrade"), ("Sec-WebSocket-Accept", ACCEPT)]),
    ("websocket", [("Upgrade", "h2c"), ("Connection", "Upgrade")]),  # not what was offered
    ("websocket", [("Upgrade", "foo"), ("Connection", "Upgrade")]),
    ("foo/2", [("Upgrade", "foo/3"), ("Connection", "Upgrade")]),
    ("websocket", [("Upgrade", "websocket"), ("Sec-WebSocket-Accept", ACCEPT)]),  # no Connection: upgrade
    ("websocket", [("Upgrade", "websocket"), ("Connection", "Upgrade")]),  # no accept
    ("websocket", [("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Accept", "AAAA")]),
    ("websocket", [*GOOD, ("Sec-WebSocket-Accept", ACCEPT)]),  # two accepts
])
def test_a_101_that_does_not_answer_the_offer_is_refused(offered: str, headers: list[tuple[str, str]]) -> None:
    assert switch_problem(offered, headers, KEY) is not None


def test_a_websocket_101_cannot_be_valid_without_the_clients_key() -> None:
    assert switch_problem("websocket", GOOD, None) is not None


def test_other_protocols_need_no_accept_header() -> None:
    assert switch_problem("foo/2", [("Upgrade", "foo/2"), ("Connection", "upgrade")], None) is None
    assert switch_problem("foo/2", [("Upgrade", "foo"), ("Connection", "upgrade")], None) is None


def test_services_allow_websocket_by_default_and_never_h2c() -> None:
    assert Service(name="s", prefixes=["/s"]).upgrades == ["websocket"]
    assert Service(name="s", prefixes=["/s"], upgrades=["WebSocket", "websocket", "foo/2"]).upgrades == [
        "websocket", "foo/2"]
    assert Service(name="s", prefixes=["/s"], upgrades=[]).upgrades == []
    for bad in (["h2c"], ["H2C/1"], ["web socket"], [""]):
        with pytest.raises(ValidationError):
            Service(name="s", prefixes=["/s"], upgrades=bad)
