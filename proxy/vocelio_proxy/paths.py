"""Request path normalisation, applied before routing so that no crafted path
(dot segments, duplicate slashes, encoded slashes) reaches a route that its
literal path would not. Called by the proxy handler; pure.

Policy for percent-encoded slashes (`%2F`) and backslashes (`%5C`): rejected.
Decoding them would let `/public%2F..%2Fadmin` walk out of a prefix, and keeping
them opaque makes routing disagree with many upstream frameworks that decode.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

_ENCODED_SEPARATOR = re.compile(r"%(2f|5c)", re.IGNORECASE)
_UNRESERVED_ESCAPE = re.compile(r"%([0-9a-fA-F]{2})")
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


class PathError(ValueError):
    """The path cannot be routed safely (answered with 400)."""


def _decode_unreserved(match: re.Match[str]) -> str:
    byte = int(match.group(1), 16)
    return chr(byte) if byte in _UNRESERVED else "%" + match.group(1).upper()


def normalize_path(raw_path: str) -> str:
    """Return the canonical form of a raw (still percent-encoded) request path.

    Decodes escapes of unreserved characters (so `%2e%2e` is a dot segment),
    collapses duplicate slashes, resolves `.` and `..` (never above the root),
    and keeps a trailing slash.
    """
    if not raw_path.startswith("/"):
        raise PathError("path must start with '/'")
    if "\x00" in raw_path or "\\" in raw_path:
        raise PathError("path contains a forbidden character")
    if _ENCODED_SEPARATOR.search(raw_path):
        raise PathError("encoded path separators (%2F, %5C) are not allowed")
    path = _UNRESERVED_ESCAPE.sub(_decode_unreserved, raw_path)
    # Remaining escapes are passed on as is, but never an encoded NUL.
    if "%" in path and "\x00" in unquote(path):
        raise PathError("path contains a forbidden character")
    segments: list[str] = []
    parts = path.split("/")
    for part in parts[1:]:
        if part in ("", "."):
            continue
        if part == "..":
            if segments:
                segments.pop()
            continue
        segments.append(part)
    trailing = path.endswith("/") or parts[-1] in (".", "..")
    result = "/" + "/".join(segments)
    if trailing and segments:
        result += "/"
    return result
