"""Backend readings of a request path, for the path-canonicalisation tests
(tests/unit/test_paths.py, tests/adversarial/test_paths_*.py): how common
frameworks and servers turn the path they receive into the path they route.

Each `Reading` is one combination of quirks seen in real backends: decoding
once or twice (chains of proxies, IIS), IIS `%uXXXX` escapes, lenient UTF-8
that accepts overlong forms (`%C0%AE` as '.'), servlet `;` path parameters
stripped before or after decoding (Tomcat, Spring), backslash as a separator
(IIS, Windows), Unicode compatibility folding (NFKC), Windows trimming of
trailing dots and spaces, and case-insensitive matching with Java/.NET-style
Unicode case mapping, and a hop that decodes the path and passes it on raw,
so the next parser cuts it at a decoded '#' or '?'. `route_of` is the longest-prefix choice such a backend
makes with the gateway's own route table; with `format_suffix` the backend also
matches a route when one segment's `.suffix` is cut off (Rails `(.:format)`,
Spring suffix pattern matching, Jersey's URI content negotiation: `admin.json`
and `admin.tar.gz` read as `admin`; modelled on any segment and at any '.', a
superset of what those frameworks do)."""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

_ESCAPE = re.compile(rb"%([0-9A-Fa-f]{2})")
_IIS_ESCAPE = re.compile(r"%[uU]([0-9A-Fa-f]{4})")


def _lenient_utf8(data: bytes) -> str:
    """UTF-8 as old lenient decoders read it: overlong forms decode to their code point."""
    out: list[str] = []
    i = 0
    while i < len(data):
        b0 = data[i]
        if b0 >= 0xC0 and b0 < 0xE0 and i + 1 < len(data) and data[i + 1] & 0xC0 == 0x80:
            out.append(chr(((b0 & 0x1F) << 6) | (data[i + 1] & 0x3F)))
            i += 2
        elif b0 >= 0xE0 and b0 < 0xF0 and i + 2 < len(data) and data[i + 1] & 0xC0 == 0x80 \
                and data[i + 2] & 0xC0 == 0x80:
            code = ((b0 & 0x0F) << 12) | ((data[i + 1] & 0x3F) << 6) | (data[i + 2] & 0x3F)
            out.append(chr(code) if not 0xD800 <= code <= 0xDFFF else "\ufffd")
            i += 3
        else:
            out.append(data[i:i + 1].decode("utf-8", errors="replace") if b0 < 0x80 else chr(b0))
            i += 1
    return "".join(out)


@dataclass(frozen=True)
class Reading:
    decodes: int = 1
    iis_unicode: bool = False
    lenient_utf8: bool = False
    params: Literal["keep", "strip-raw", "strip-decoded"] = "keep"
    backslash: bool = False
    nfkc: bool = False
    trim: bool = False
    case_insensitive: bool = False
    reparse: bool = False
    format_suffix: bool = False

    def _decode(self, text: str) -> str:
        if self.iis_unicode:
            text = _IIS_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text)
        data = _ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), text.encode("utf-8", "surrogateescape"))
        if self.lenient_utf8:
            return _lenient_utf8(data)
        return data.decode("utf-8", errors="replace")

    def read(self, path: str) -> str:
        """The path this backend routes, for a request path it received."""
        if self.params == "strip-raw":
            path = "/".join(seg.partition(";")[0] for seg in path.split("/"))
        for _ in range(self.decodes):
            path = self._decode(path)
            if self.reparse:
                path = re.split("[#?]", path, maxsplit=1)[0]
        if self.params == "strip-decoded":
            path = "/".join(seg.partition(";")[0] for seg in path.split("/"))
        if self.backslash:
            path = path.replace("\\", "/")
        if self.nfkc:
            path = unicodedata.normalize("NFKC", path)
        segments: list[str] = []
        for seg in path.split("/"):
            if self.trim and seg not in (".", ".."):
                seg = seg.rstrip(". ")
            if seg in ("", "."):
                continue
            if seg == "..":
                if segments:
                    segments.pop()
                continue
            segments.append(seg)
        out = "/" + "/".join(segments)
        return fold(out) if self.case_insensitive else out


def fold(text: str) -> str:
    """Java `equalsIgnoreCase` / .NET `OrdinalIgnoreCase`-style folding (dotless i U+0131 -> 'i',
    the Kelvin sign U+212A -> 'k')."""
    return text.upper().lower()


def all_readings() -> list[Reading]:
    combos: Iterable[tuple[int, bool, bool, str, bool, bool, bool, bool, bool, bool]] = itertools.product(
        (1, 2), (False, True), (False, True), ("keep", "strip-raw", "strip-decoded"), (False, True),
        (False, True), (False, True), (False, True), (False, True), (False, True))
    return [Reading(d, u, lu, p, b, n, t, c, r, f)  # type: ignore[arg-type]
            for d, u, lu, p, b, n, t, c, r, f in combos]


def suffix_stripped(path: str) -> list[str]:
    """`path` with one segment cut at one of its '.' (not a leading one): every way a
    format-suffix-stripping backend may read it."""
    segments = path.split("/")
    out = []
    for i, seg in enumerate(segments):
        dot = seg.find(".", 1)
        while dot != -1:
            out.append("/".join([*segments[:i], seg[:dot], *segments[i + 1:]]))
            dot = seg.find(".", dot + 1)
    return out


def route_of(path: str, prefixes: Iterable[str], case_insensitive: bool,
             format_suffix: bool = False) -> str | None:
    """The longest prefix (on segment boundaries) a backend reading `path` routes it under;
    with `format_suffix`, also reading it with a format suffix stripped."""
    readings = [path, *suffix_stripped(path)] if format_suffix else [path]
    best: str | None = None
    for prefix in prefixes:
        p = fold(prefix) if case_insensitive else prefix
        base = p.rstrip("/")
        under = any(read in (p, base) or base == "" or read.startswith(base + "/") for read in readings)
        if under and (best is None or len(prefix) > len(best)):
            best = prefix
    return best


def readings_that_reach(path: str, prefixes: list[str], target: str,
                        readings: list[Reading] | None = None) -> list[Reading]:
    """The backend readings of a received `path` that route it under `target`."""
    return [r for r in readings or all_readings()
            if route_of(r.read(path), prefixes, r.case_insensitive, r.format_suffix) == target]
