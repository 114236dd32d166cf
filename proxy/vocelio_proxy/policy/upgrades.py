"""Upgrade policy (RFC 9110 section 7.8, RFC 6455 section 4): which protocols a
client may switch to through the gateway, and whether an upstream's 101 is a
valid answer to the upgrade that was forwarded.

- Only the protocols a service lists in `upgrades` are offered upstream
  (case-insensitive tokens; `websocket` by default). `h2c` never is: HTTP/2
  over cleartext via `Upgrade` is how requests get smuggled past a proxy's
  routing and access control (the "h2c smuggling" class).
- A 101 is honoured only when it names exactly one protocol that was offered,
  says `Connection: upgrade`, and, for WebSocket, proves it read the client's
  key (`Sec-WebSocket-Accept` = base64(sha1(key + GUID))).

Pure; used by `proxying` for upgrade requests."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Collection, Iterable

#: RFC 6455 section 1.3.
WEBSOCKET_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#: Protocols never offered upstream, whatever a service allows.
NEVER_FORWARDED = frozenset({"h2c"})
#: Request headers that belong to an upgrade the gateway never forwards.
H2C_HEADERS = frozenset({"http2-settings"})

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+(/[!#$%&'*+.^_`|~0-9A-Za-z-]+)?")


def _protocols(value: str) -> list[str]:
    return [p.strip() for p in value.split(",") if p.strip()]


def offered_upgrade(allowed: Collection[str], header: str) -> str | None:
    """The client's `Upgrade` list reduced to the protocols the service allows, in the
    client's order and spelling, or None when nothing is left to offer upstream.
    `allowed` holds lower-case tokens; an entry without a version allows every version."""
    keep: list[str] = []
    for protocol in _protocols(header):
        if not _TOKEN.fullmatch(protocol):
            continue
        lower = protocol.lower()
        name = lower.split("/", 1)[0]
        if name in NEVER_FORWARDED:
            continue
        if lower in allowed or name in allowed:
            keep.append(protocol)
    return ", ".join(keep) if keep else None


def offers_websocket(offered: str) -> bool:
    return any(p.lower().split("/", 1)[0] == "websocket" for p in _protocols(offered))


def valid_websocket_key(key: str | None) -> bool:
    """RFC 6455 4.1: the key is base64 of 16 bytes."""
    if not key:
        return False
    try:
        return len(base64.b64decode(key.strip(), validate=True)) == 16
    except (binascii.Error, ValueError):
        return False


def websocket_accept(key: str) -> str:
    """The `Sec-WebSocket-Accept` a server must answer to `key`."""
    digest = hashlib.sha1(key.strip().encode("latin-1") + WEBSOCKET_GUID, usedforsecurity=False).digest()
    return base64.b64encode(digest).decode("ascii")


def switch_problem(offered: str, answer_headers: Iterable[tuple[str, str]], websocket_key: str | None) -> str | None:
    """Why a 101 with `answer_headers` is not a valid answer to an upgrade that offered
    `offered`; None when it is. The reason is for logs, never for the client."""
    upgrades: list[str] = []
    connection: list[str] = []
    accepts: list[str] = []
    for name, value in answer_headers:
        lower = name.lower()
        if lower == "upgrade":
            upgrades.extend(_protocols(value))
        elif lower == "connection":
            connection.extend(t.lower() for t in _protocols(value))
        elif lower == "sec-websocket-accept":
            accepts.append(value.strip())
    if len(upgrades) != 1:
        return f"101 names {len(upgrades)} protocols (exactly one required)"
    chosen = upgrades[0].lower()
    chosen_name = chosen.split("/", 1)[0]
    matches = False
    for protocol in _protocols(offered):
        lower = protocol.lower()
        if chosen == lower or ("/" not in chosen and chosen_name == lower.split("/", 1)[0]):
            matches = True
            break
    if not matches:
        return f"101 switches to {upgrades[0]!r}, which was not offered"
    if "upgrade" not in connection:
        return "101 without Connection: upgrade"
    if chosen_name == "websocket":
        if websocket_key is None or not valid_websocket_key(websocket_key):
            return "101 to a WebSocket request without a valid key"
        if accepts != [websocket_accept(websocket_key)]:
            return "101 with a missing or wrong Sec-WebSocket-Accept"
    return None
