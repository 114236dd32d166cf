"""Backend address policy (vocelio_operator.translation.tenancy.addresses): every spelling
of loopback, unspecified, link-local, multicast, this-host and metadata
addresses is refused in cluster mode, static endpoints are off unless enabled,
and whatever is accepted means, to the resolver the proxy connects with, an
address that is none of those."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vocelio_operator.translation.tenancy.addresses import AddressPolicy, parse_networks

POLICY = AddressPolicy(static_endpoints=True)

HOSTILE = [
    # loopback in every spelling inet_aton or a URL parser would read
    "127.0.0.1", "127.1", "127.0.1", "2130706433", "0x7f000001", "0177.0.0.1", "0x7f.1", "0x7f.0.0.1",
    "127.000.000.001", "0127.0.0.1", "127.0.0.01", "::1", "0:0:0:0:0:0:0:1", "::ffff:127.0.0.1", "::FFFF:7f00:1",
    "::ffff:0177.0.0.1", "::127.0.0.1", "64:ff9b::7f00:1", "2002:7f00:1::1", "2001:0:4136:e378:8000:63bf:80ff:fffe",
    "[::1]", "[127.0.0.1]", "localhost", "LOCALHOST", "127.0.0.1:8080", " 127.0.0.1", "127.0.0.1 ", "127.0.0.1\n",
    "127.0.0.1.", "127.0.0.1%00", "\u2460\u2461\u2466.0.0.1", "\uff11\uff12\uff17.0.0.1",  # fullwidth
    # unspecified and this host
    "0.0.0.0", "0", "::", "0.1.2.3", "::ffff:0.0.0.0",
    # link-local and metadata
    "169.254.169.254", "169.254.0.1", "::ffff:169.254.169.254", "64:ff9b::a9fe:a9fe", "2002:a9fe:a9fe::",
    "0xa9.0xfe.0xa9.0xfe", "2852039166", "fe80::1", "FE80::1", "fe80::1%eth0", "fe80::1%1", "fe80::1%25eth0",
    "fd00:ec2::254", "FD00:EC2::254", "fd00:ec2:0:0:0:0:0:254", "100.100.100.200", "metadata.google.internal",
    "169.254.169.254.nip.io",
    # multicast, broadcast, reserved, site-local, zone ids on anything
    "224.0.0.1", "239.255.255.250", "ff02::1", "ff05::2", "255.255.255.255", "240.0.0.1", "fec0::1",
    "2001:db8::1%eth0", "10.0.0.1%eth0",
]

ACCEPTED = ["198.18.100.1", "10.1.2.3", "192.168.7.8", "172.16.0.9", "2001:db8::1", "fd12:3456::1", "100.64.0.1",
            "8.8.8.8", "2606:4700::1111"]


@pytest.mark.parametrize("address", HOSTILE)
def test_a_hostile_static_endpoint_is_refused_with_a_reason(address: str) -> None:
    reason = POLICY.static_refusal(address)
    assert reason is not None
    assert reason.startswith("address ")


@pytest.mark.parametrize("address", ACCEPTED)
def test_an_ordinary_pod_or_service_address_is_accepted(address: str) -> None:
    assert POLICY.static_refusal(address) is None


@pytest.mark.parametrize("address", ["198.18.100.1", "127.0.0.1", "10.0.0.1"])
def test_static_endpoints_are_refused_in_cluster_mode_unless_enabled(address: str) -> None:
    reason = AddressPolicy().static_refusal(address)
    assert reason is not None
    assert "disabled" in reason


def test_a_configured_deny_range_refuses_the_range_in_every_family_spelling() -> None:
    policy = AddressPolicy(static_endpoints=True, deny=parse_networks(["10.96.0.0/12", "fd00:10::/64"]))
    for address in ("10.96.0.1", "10.111.255.255", "::ffff:10.96.0.1", "fd00:10::5"):
        reason = policy.static_refusal(address)
        assert reason is not None, address
        assert "denied range" in reason, address
    assert policy.static_refusal("10.95.255.255") is None
    assert policy.static_refusal("10.112.0.0") is None


def test_discovered_addresses_are_judged_without_the_static_switch() -> None:
    policy = AddressPolicy(static_endpoints=False)
    assert policy.refusal("198.18.0.5") is None
    assert "denied range" in (policy.refusal("fd00:ec2::254") or "")


def test_loopback_may_be_allowed_explicitly_but_metadata_stays_refused() -> None:
    policy = AddressPolicy(static_endpoints=True, allow_loopback=True)
    assert policy.static_refusal("127.0.0.1") is None
    assert policy.static_refusal("169.254.169.254") is not None


def test_a_refusal_message_is_bounded_and_printable() -> None:
    reason = POLICY.static_refusal("x" * 5000 + "\x1b[2J")
    assert reason is not None
    assert len(reason) < 400
    assert reason.isprintable()


BAD_V4 = st.one_of(
    st.integers(0x7F000000, 0x7FFFFFFF),          # 127.0.0.0/8
    st.integers(0xA9FE0000, 0xA9FEFFFF),          # 169.254.0.0/16
    st.integers(0xE0000000, 0xEFFFFFFF),          # 224.0.0.0/4
    st.integers(0x00000000, 0x00FFFFFF),          # 0.0.0.0/8
).map(ipaddress.IPv4Address)


def _spellings(ip: ipaddress.IPv4Address) -> list[str]:
    a, b, c, d = ip.packed
    n = int(ip)
    return [
        str(ip), f"::ffff:{ip}", f"::ffff:{n >> 16:x}:{n & 0xFFFF:x}", f"::{ip}", f"64:ff9b::{ip}",
        f"2002:{n >> 16:x}:{n & 0xFFFF:x}::1", str(n), hex(n), f"0{a:o}.{b}.{c}.{d}", f"{a:#x}.{b}.{c}.{d}",
        f"{a:03d}.{b:03d}.{c:03d}.{d:03d}", f"{a}.{(b << 16) | (c << 8) | d}", f"[{ip}]", f"{ip}%eth0",
        f"::ffff:{ip}%eth0", f" {ip}", f"{ip}:80",
    ]


@given(BAD_V4)
def test_every_spelling_of_a_generated_bad_ipv4_address_is_refused(ip: ipaddress.IPv4Address) -> None:
    for text in _spellings(ip):
        assert POLICY.static_refusal(text) is not None, text


@given(st.integers(0, 2**64 - 1), st.sampled_from(["fe80", "febf", "ff02", "ff0e"]),
       st.text("abcdefgh0123", max_size=6))
def test_generated_link_local_and_multicast_ipv6_is_refused_with_and_without_zone(
        low: int, head: str, zone: str) -> None:
    ip = ipaddress.IPv6Address((int(head, 16) << 112) | low)
    for text in (str(ip), ip.exploded, f"{ip}%{zone or 'eth0'}", f"[{ip}]"):
        assert POLICY.static_refusal(text) is not None, text


def refused_by_kernel_view(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return (ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_unspecified
            or (ip.version == 4 and ip in ipaddress.IPv4Network("0.0.0.0/8")))


ADDRESS_TEXT = st.one_of(
    st.ip_addresses().map(str),
    st.ip_addresses(v=6).map(lambda ip: ip.exploded.upper()),
    st.ip_addresses(v=4).map(lambda ip: f"::ffff:{ip}"),
    st.ip_addresses(v=4).map(lambda ip: f"::{ip}"),
    st.text(alphabet="0123456789abcdefABCDEFx.:%[]f ", min_size=1, max_size=40),
)


@given(ADDRESS_TEXT)
def test_whatever_is_accepted_resolves_numerically_to_an_allowed_address(text: str) -> None:
    """Differential against the resolver the proxy connects through (getaddrinfo, numeric only)."""
    if POLICY.static_refusal(text) is not None:
        return
    infos = socket.getaddrinfo(text, 80, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    for *_, sockaddr in infos:
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        for candidate in (ip, mapped):
            if candidate is None:
                continue
            assert not refused_by_kernel_view(candidate), (text, candidate)
        assert ip == ipaddress.ip_address(text)
