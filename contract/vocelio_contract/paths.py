"""Request path canonicalisation: one canonical spelling per request path, or a
refusal. Called by the request pipeline (`handling.GatewayHandler`) before the
gateway's own endpoints and the router, and by `routing.Router.build` for the
configured prefixes, so paths and prefixes are compared in the same form, and
(`route_key`) by the renderer (`vocelio_operator.translation.rendering`), the file provider and
the router, so all three decide which route prefixes are "the same". Pure.

The principle: routing decides on one canonical form, and the upstream is sent
that same form (`Router.match` rewrites the canonical path, never the raw one),
so a backend cannot read the path as something the gateway did not route. A
spelling that plausible backends read differently from each other (a
case-insensitive ASP.NET router, a servlet container that strips `;jsessionid`,
Windows trimming `admin.` to `admin`, a second percent-decoding, Unicode
compatibility folding) is refused rather than guessed at. Choices that have a
legitimate alternative are `PathPolicy` fields (settings: `PathSettings`), with
the strict choice as default; docs/security/paths.md lists every class.

Canonical form: starts with `/`; no empty, `.` or `..` segments (duplicate
slashes collapse, dot segments resolve, never above the root); escapes of
unreserved characters and of ``!$&'()*,=:@`` are decoded (every backend reads
them the same either way), every other byte outside those is percent-encoded
with upper-case hex (`+` and `%2B` stay distinct: form decoders read `+` as a
space); a trailing slash is kept. The result is pure ASCII.

Route key (`route_key`): two prefixes with equal keys are one route to some
backend (they differ only by letter case, unless the policy is `case: sensitive`,
by escapes a decoding backend reads the same, `+` and `%2B` included, or by
Unicode compatibility forms), so the router refuses requests under both when
different services claim them, and the renderer rejects the newer claimant.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Literal, Protocol
from urllib.parse import unquote

CaseMode = Literal["reject-mismatch", "insensitive", "sensitive"]
ParameterMode = Literal["reject", "strip", "allow"]
RejectOrAllow = Literal["reject", "allow"]
NonAsciiMode = Literal["unambiguous", "reject", "allow"]


class PathError(ValueError):
    """The path cannot be routed safely (answered with 400)."""


_UNRESERVED = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
# Sub-delimiters, ':' and '@' that mean nothing special inside a segment to any
# mainstream router: their escapes decode to the character itself. Not '+' (form
# decoders read it as a space) and not ';' (path parameters, a policy).
_PLAIN_DELIMS = "!$&'()*,=:@"
_DECODED = frozenset((_UNRESERVED + _PLAIN_DELIMS).encode())
# Raw characters a segment may hold as they are.
_RAW_OK = frozenset(_UNRESERVED + _PLAIN_DELIMS + "+")
# Printable ASCII that RFC 3986 wants encoded; some clients send it raw. The canonical
# form encodes it, so the upstream sees one spelling.
_RAW_ENCODED = frozenset('"<>[]^`{|}')
_ESCAPE_SPLIT = re.compile(r"(%[0-9A-Fa-f]{2})")
# After one decoding, `%25` followed by hex digits (or IIS's `%u`) is a new escape: a
# backend (or a chain of proxies) that decodes twice reads something else.
_DOUBLE_ENCODED = re.compile(r"%25(?:[0-9A-Fa-f]{2}|[uU])")
_SAFE_BASE = r"\-A-Za-z0-9_~!$&'()*+,=:@"
_ASCII = re.compile("[\x00-\x7f]")
_NON_ASCII_CATEGORIES_REFUSED = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"})


class PathChoices(Protocol):
    """What `PathPolicy.from_settings` reads: the proxy's `PathSettings` (the contract
    does not import the proxy, so it names the fields it needs)."""

    @property
    def case(self) -> CaseMode: ...
    @property
    def path_parameters(self) -> ParameterMode: ...
    @property
    def trailing_dots_and_spaces(self) -> RejectOrAllow: ...
    @property
    def encoded_delimiters(self) -> RejectOrAllow: ...
    @property
    def double_encoding(self) -> RejectOrAllow: ...
    @property
    def non_ascii(self) -> NonAsciiMode: ...
    @property
    def format_suffix(self) -> RejectOrAllow: ...


@dataclass(frozen=True, slots=True)
class PathPolicy:
    """The choices of the canonicalisation (see `PathSettings` for each)."""

    case: CaseMode = "reject-mismatch"
    path_parameters: ParameterMode = "reject"
    trailing_dots_and_spaces: RejectOrAllow = "reject"
    encoded_delimiters: RejectOrAllow = "reject"
    double_encoding: RejectOrAllow = "reject"
    non_ascii: NonAsciiMode = "unambiguous"
    #: A segment whose '.suffix' a Rails or Spring backend strips (`admin.json` read as
    #: `admin`): refused when stripping it would select a more specific route (`Router`).
    format_suffix: RejectOrAllow = "reject"
    #: Fast path: a path made only of safe characters, with no empty segment and no
    #: segment ending in '.', is already canonical (one regex match, no allocation).
    _plain: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        safe = _SAFE_BASE + (";" if self.path_parameters == "allow" else "")
        object.__setattr__(self, "_plain", re.compile(f"(?:/[{safe}.]*[{safe}])*/?"))

    @classmethod
    def from_settings(cls, settings: PathChoices) -> PathPolicy:
        return cls(case=settings.case, path_parameters=settings.path_parameters,
                   trailing_dots_and_spaces=settings.trailing_dots_and_spaces,
                   encoded_delimiters=settings.encoded_delimiters, double_encoding=settings.double_encoding,
                   non_ascii=settings.non_ascii, format_suffix=settings.format_suffix)


DEFAULT_POLICY = PathPolicy()


def route_key(prefix: str, policy: PathPolicy = DEFAULT_POLICY) -> str:
    """The key route prefixes are compared by: prefixes with equal keys are the same
    route to a backend that decodes escapes, applies Unicode compatibility forms and
    (unless `policy.case` is "sensitive") ignores letter case, so no two services may
    claim one key. Raises `PathError` when the policy refuses the prefix (no request
    can reach it). The router, the renderer and the file provider all use this."""
    canonical = normalize_path(prefix, policy).rstrip("/") or "/"
    return decode_path(canonical) if policy.case == "sensitive" else fold_path(canonical)


def fold_path(canonical: str) -> str:
    """The decoded, compatibility-normalised, case-folded text of a canonical path, as a
    case-insensitive Java or .NET backend compares it (`route_key` without canonicalising)."""
    return decode_path(canonical).upper().lower()


def decode_path(canonical: str) -> str:
    """The decoded, compatibility-normalised text of a canonical path (`%2B` and `+` alike)."""
    # A canonical path's escapes are valid UTF-8 (`_segment` refuses the rest).
    return unicodedata.normalize("NFKC", unquote(canonical, errors="strict"))


def normalize_path(raw_path: str, policy: PathPolicy = DEFAULT_POLICY) -> str:
    """Return the canonical form of a raw (still percent-encoded) request path,
    or raise `PathError` when the path is ambiguous or unsafe under `policy`."""
    if raw_path[:1] == "/" and policy._plain.fullmatch(raw_path) is not None:
        return raw_path
    return _canonical(raw_path, policy)


def _canonical(raw_path: str, policy: PathPolicy) -> str:
    if not raw_path.startswith("/"):
        raise PathError("path must start with '/'")
    if "#" in raw_path:
        raise PathError("a request target has no fragment ('#')")
    segments: list[str] = []
    last = ""
    for raw in raw_path[1:].split("/"):
        text, spelled = (raw, raw) if raw in ("", ".", "..") else _segment(raw, policy)
        last = text
        if text in ("", "."):
            continue
        if text == "..":
            if segments:
                segments.pop()
            continue
        segments.append(spelled)
    result = "/" + "/".join(segments)
    if last in ("", ".", "..") and segments:
        result += "/"
    return result


def _segment(raw: str, policy: PathPolicy) -> tuple[str, str]:
    """One segment: (its text as a decoding backend reads it, its canonical spelling)."""
    if ";" in raw:
        if policy.path_parameters == "reject":
            raise PathError("path parameters (';') are not allowed")
        if policy.path_parameters == "strip":
            # What servlet containers do: drop everything from the first ';' of the segment.
            raw = raw.partition(";")[0]
    decoded = bytearray()
    spelled: list[str] = []
    escaped = False
    for i, piece in enumerate(_ESCAPE_SPLIT.split(raw)):
        if i % 2:
            _escape(int(piece[1:], 16), decoded, spelled, policy)
            escaped = True
        elif piece:
            _raw_text(piece, decoded, spelled)
    try:
        text = decoded.decode("utf-8")
    except UnicodeDecodeError:
        # Includes overlong forms such as %C0%AE ('.'), which lenient decoders accept.
        raise PathError("percent-encoded bytes are not valid UTF-8") from None
    if not text.isascii():
        _check_non_ascii(text, policy.non_ascii)
    if text in (".", ".."):
        return text, text
    if policy.trailing_dots_and_spaces == "reject" and text[-1:] in (".", " "):
        # Windows and IIS trim them: `admin.` and `admin%20` would be read as `admin`.
        raise PathError("a path segment ends with '.' or a space")
    canonical = "".join(spelled)
    if escaped and policy.double_encoding == "reject" and _DOUBLE_ENCODED.search(canonical):
        raise PathError("double percent-encoding ('%25' followed by an escape) is not allowed")
    return text, canonical


def _escape(byte: int, decoded: bytearray, spelled: list[str], policy: PathPolicy) -> None:
    if byte in (0x2F, 0x5C):
        raise PathError("encoded path separators (%2F, %5C) are not allowed")
    if byte < 0x20 or byte == 0x7F:
        raise PathError("path contains a control character")
    if byte in (0x23, 0x3F) and policy.encoded_delimiters == "reject":
        raise PathError("encoded '#' or '?' (%23, %3F) is not allowed in a path")
    if byte == 0x3B and policy.path_parameters != "allow":
        raise PathError("an encoded ';' (%3B) is ambiguous with path parameters")
    decoded.append(byte)
    spelled.append(chr(byte) if byte in _DECODED else f"%{byte:02X}")


def _raw_text(piece: str, decoded: bytearray, spelled: list[str]) -> None:
    for ch in piece:
        code = ord(ch)
        if ch in _RAW_OK or ch == ";":
            decoded.append(code)
            spelled.append(ch)
        elif code >= 0x80:
            # The server decodes the target as Latin-1: one character per raw byte.
            data = bytes([code]) if code <= 0xFF else ch.encode("utf-8")
            decoded.extend(data)
            spelled.extend(f"%{b:02X}" for b in data)
        elif ch in _RAW_ENCODED:
            decoded.append(code)
            spelled.append(f"%{code:02X}")
        elif ch == "%":
            raise PathError("malformed percent-encoding ('%' must start '%XX')")
        elif ch == "\\":
            raise PathError("backslashes are not allowed in a path")
        elif ch == "#":
            raise PathError("a request target has no fragment ('#')")
        elif ch == "?":
            raise PathError("'?' cannot appear in a path")
        else:
            raise PathError("path contains a space or a control character")


def _check_non_ascii(text: str, mode: NonAsciiMode) -> None:
    if mode == "allow":
        return
    if mode == "reject":
        raise PathError("non-ASCII characters are not allowed in a path")
    for ch in text:
        if ch.isascii():
            continue
        if unicodedata.category(ch) in _NON_ASCII_CATEGORIES_REFUSED:
            raise PathError("path contains an invisible, space or unassigned Unicode character")
        if _folds_to_ascii(ch):
            raise PathError("path contains a Unicode character that backends may read as ASCII")


def _folds_to_ascii(ch: str) -> bool:
    """Whether a case mapping or compatibility normalisation of `ch` yields ASCII
    (fullwidth full stop and solidus U+FF0E/U+FF0F, the Kelvin sign U+212A, dotless
    i U+0131 upper-cased to 'I', sharp s U+00DF upper-cased to 'SS')."""
    nfkc = unicodedata.normalize("NFKC", ch)
    # U+FFFF separates the variants: a noncharacter nothing composes with.
    variants = "\uffff".join((ch, nfkc, ch.upper(), ch.lower(), ch.casefold(), ch.upper().lower(),
                              nfkc.upper(), nfkc.lower(), nfkc.casefold(), nfkc.upper().lower()))
    return _ASCII.search(variants) is not None or _ASCII.search(unicodedata.normalize("NFKC", variants)) is not None
