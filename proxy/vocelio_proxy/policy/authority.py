"""The one parser for an HTTP authority (`Host`, `X-Forwarded-Host`, trusted-host
settings): RFC 3986 `host [ ":" port ]` where host is a reg-name, an IPv4
address or a bracketed IPv6 literal. Pure; called by the settings (to validate
and normalise `trusted_hosts`), the request pipeline (trusted-hosts check) and
the forwarded-header policy.

Stricter than RFC 3986 where a second reading is possible, so a value has one
meaning for the gateway and for every backend behind it:

* userinfo (`user@host`) is refused: RFC 9110 forbids it in `Host`, and
  `host:@evil` must never read as `host`;
* percent-encoding in the host is refused (`ho%73t` would be `host` to one
  reader and not to another); so are IPvFuture and IPv6 zone identifiers;
* the port is digits only, at most 65535; an empty port (`host:`) means none;
* the host is compared case-insensitively and one trailing dot (the DNS root,
  `host.`) is removed: `HOST.` and `host` are the same name.
"""

from __future__ import annotations

import ipaddress
import re
from typing import NamedTuple

# reg-name = *( unreserved / sub-delims ) (pct-encoded refused, see above); IP-literal
# holds an IPv6 address (checked by `ipaddress` below). Anything else does not match.
_AUTHORITY = re.compile(
    r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9\-._~!$&'()*+,;=]+))(?::(?P<port>[0-9]{0,5}))?")


class Authority(NamedTuple):
    """A parsed authority: `host` lower-case without a trailing dot (an IPv6
    literal keeps its brackets, compressed), `port` None when absent."""

    host: str
    port: int | None

    def __str__(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"


def parse_authority(text: str) -> Authority | None:
    """The authority in `text`, or None when it is not one (see the module doc)."""
    match = _AUTHORITY.fullmatch(text)
    if match is None:
        return None
    port_text = match.group("port")
    port = int(port_text) if port_text else None
    if port is not None and port > 65535:
        return None
    v6 = match.group("v6")
    if v6 is not None:
        try:
            return Authority(f"[{ipaddress.IPv6Address(v6).compressed}]", port)
        except ValueError:
            return None
    name = match.group("name").lower()
    if name.endswith("."):
        name = name[:-1]
    if not name or name.endswith("."):
        return None
    return Authority(name, port)
