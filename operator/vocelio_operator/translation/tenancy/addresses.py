"""Which backend addresses a tenant may point the gateway at. Pure; the
renderer asks `AddressPolicy.refusal` for every static endpoint and every
discovered (EndpointSlice) address in cluster mode; standalone mode passes no
policy and keeps serving loopback backends (the quickstart's).

In cluster mode a static endpoint must be an IP literal: a host name could
resolve to any address at connect time (the metadata service, the gateway's own
pods), and so could the legacy spellings `inet_aton` still reads (`2130706433`,
`0177.0.0.1`, `0x7f.1`, `127.1`); the `ipaddress` module refuses all of those,
so anything it does not parse is refused. A parsed address is refused when it
is unspecified, loopback, link-local, multicast, reserved, in 0.0.0.0/8, or in a
configured deny range; IPv6 forms that carry an IPv4 address (mapped
`::ffff:a.b.c.d`, compatible `::a.b.c.d`, NAT64 `64:ff9b::/96`, 6to4, Teredo)
are judged by that IPv4 address too, and an IPv6 zone id is refused (it names
an interface of the gateway's host, never a backend)."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Cloud metadata endpoints (AWS/GCP/Azure/OpenStack IPv4, AWS IPv6, Alibaba): refused by default.
DEFAULT_DENY_CIDRS = ("169.254.169.254/32", "fd00:ec2::254/128", "100.100.100.200/32")

_MEMO_LIMIT = 1 << 16
_THIS_NETWORK = ipaddress.IPv4Network("0.0.0.0/8")
_V4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # the well-known prefix: the IPv4 address is the last 32 bits


def parse_networks(cidrs: Iterable[str]) -> tuple[IPNetwork, ...]:
    """Networks from CIDR text; raises ValueError naming the first bad one."""
    out = []
    for cidr in cidrs:
        try:
            out.append(ipaddress.ip_network(cidr, strict=False))
        except ValueError as exc:
            raise ValueError(f"{cidr!r} is not a network ({exc})") from None
    return tuple(out)


def embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries (and may be translated to) on some path."""
    out: list[ipaddress.IPv4Address] = []
    if address.ipv4_mapped is not None:
        out.append(address.ipv4_mapped)
    if address.sixtofour is not None:
        out.append(address.sixtofour)
    if address.teredo is not None:
        out.extend(address.teredo)
    packed = int(address)
    if address in _V4_COMPATIBLE and packed > 1:
        out.append(ipaddress.IPv4Address(packed & 0xFFFFFFFF))
    if address in _NAT64:
        out.append(ipaddress.IPv4Address(packed & 0xFFFFFFFF))
    return out


@dataclass(frozen=True)
class AddressPolicy:
    """What the renderer accepts as a backend address in cluster mode."""

    #: Static endpoints at all (off unless the operator is started with them enabled).
    static_endpoints: bool = False
    #: Configured deny ranges (defaults: the metadata addresses).
    deny: tuple[IPNetwork, ...] = parse_networks(DEFAULT_DENY_CIDRS)
    #: Loopback targets (only for standalone-like setups; never the operator's default).
    allow_loopback: bool = False
    #: Verdicts by address text: a render judges every discovered endpoint, and they rarely change.
    #: Owned by whoever holds this policy (the reconciler keeps one for its lifetime); bounded.
    _memo: dict[str, str | None] = field(default_factory=dict, compare=False, repr=False, hash=False)
    #: `address_forms` by address text, for the gateway fence (same owner and bound).
    _forms: dict[str, frozenset[IPAddress]] = field(default_factory=dict, compare=False, repr=False, hash=False)

    def forms(self, address: str) -> frozenset[IPAddress]:
        """`address_forms(address)`, remembered."""
        try:
            return self._forms[address]
        except KeyError:
            pass
        if len(self._forms) >= _MEMO_LIMIT:
            self._forms.clear()
        found = self._forms[address] = address_forms(address)
        return found

    def static_refusal(self, address: str) -> str | None:
        """Why a static endpoint may not be used, or None when it may."""
        if not self.static_endpoints:
            return "static endpoints are disabled in cluster mode (the operator's tenancy.staticEndpoints.enabled)"
        return self.refusal(address)

    def refusal(self, address: str) -> str | None:
        """Why this address may not be a backend, or None when it may."""
        try:
            return self._memo[address]
        except KeyError:
            pass
        if len(self._memo) >= _MEMO_LIMIT:
            self._memo.clear()
        verdict = self._memo[address] = self._judge(address)
        return verdict

    def _judge(self, address: str) -> str | None:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return (f"address {_shown(address)} is not an IP address: host names and other spellings could "
                    "resolve to any address, so only IP literals are accepted")
        if isinstance(ip, ipaddress.IPv6Address):
            if ip.scope_id is not None:
                return f"address {_shown(address)} carries an IPv6 zone id, which names a gateway interface"
            for inner in embedded_ipv4(ip):
                why = self._refusal_of(inner)
                if why is not None:
                    return f"address {address} carries IPv4 {inner}, which is {why}"
        why = self._refusal_of(ip)
        return None if why is None else f"address {address} is {why}"

    def _refusal_of(self, ip: IPAddress) -> str | None:
        for net in self.deny:
            if ip.version == net.version and ip in net:
                return f"in the denied range {net}"
        if ip.is_loopback:
            return None if self.allow_loopback else "a loopback address"
        if ip.is_unspecified:
            return "the unspecified address"
        if ip.is_link_local:
            return "a link-local address"
        if ip.is_multicast:
            return "a multicast address"
        if isinstance(ip, ipaddress.IPv4Address) and ip in _THIS_NETWORK:
            return "in 0.0.0.0/8 (this host)"
        if isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local:
            return "a site-local address"
        if ip.is_reserved:
            return "a reserved address"
        return None


def _shown(text: str) -> str:
    """The address for a message: bounded and printable (it comes from a tenant's resource)."""
    clean = "".join(c if c.isprintable() else "?" for c in text[:80])
    return repr(clean)


def address_forms(address: str) -> frozenset[IPAddress]:
    """An address and the IPv4 addresses it carries, for comparing spellings of one host
    (`::ffff:10.0.0.5` is `10.0.0.5`); empty for text that is no IP literal."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return frozenset()
    if isinstance(ip, ipaddress.IPv6Address):
        # Without a zone id: `fe80::1%eth0` is the host `fe80::1`.
        return frozenset({ipaddress.IPv6Address(int(ip)), *embedded_ipv4(ip)})
    return frozenset({ip})


@dataclass(frozen=True)
class GatewayFence:
    """The endpoints of the Services in the gateway's own namespace (its proxies, the operator,
    Redis): no other namespace's backend may point at them, whether as a static endpoint or
    through an EndpointSlice it wrote for its own Service (the route would send the public
    traffic of a tenant's prefix to the gateway's internals). Built by the reconciler from the
    EndpointSlices it indexes; the gateway namespace's own resources are not fenced."""

    namespace: str = ""
    addresses: frozenset[IPAddress] = frozenset()

    @classmethod
    def of(cls, namespace: str, addresses: Iterable[str]) -> GatewayFence:
        return cls(namespace, frozenset(ip for a in addresses for ip in address_forms(a)))

    def refusal(self, backend_namespace: str, address: str,
                forms: Callable[[str], frozenset[IPAddress]] = address_forms) -> str | None:
        """Why a backend of `backend_namespace` may not use `address`, or None (`forms`: a
        remembering `address_forms`, such as `AddressPolicy.forms`)."""
        if not self.addresses or backend_namespace == self.namespace:
            return None
        if forms(address) & self.addresses:
            return (f"address {_shown(address)} is an endpoint of a Service in the gateway's namespace "
                    f"{self.namespace}")
        return None
