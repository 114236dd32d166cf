"""The sans-I/O rules of the gateway's HTTP/2 server, used by `connection`:

- `H2Limits`: the settings it advertises and the per-connection budgets;
- `FrameMeter`: reads the frame headers of the client's byte stream before h2
  does (nothing is copied) and answers when the client abuses the connection:
  a header block (HEADERS + CONTINUATION without END_HEADERS) over its byte cap,
  more stream resets than the reset budget allows per window (rapid reset,
  CVE-2023-44487), more frames that make no progress (SETTINGS, PING,
  WINDOW_UPDATE, PRIORITY, GOAWAY, empty DATA, unknown types) than the control budget
  allows per window. The clock is passed in (`now`), never read here;
- `request_head`: a request's decoded field list (h2 has already checked
  pseudo-header placement, upper-case names, connection-specific fields and
  `TE`) checked for what h2 does not check: field-name tokens, control
  characters in values (CR/LF/NUL and every other one the HTTP/1.1 parser
  refuses: an HTTP/1.1 upstream never gets a value the HTTP/1.1 front would
  have answered with 400), `:path`/`:method`/`:authority` that could not be written as an
  HTTP/1.1 request line or Host without changing meaning, conflicting
  Content-Length; cookie crumbs joined with "; " (RFC 9113 §8.2.3);
- `response_fields` / `trailer_fields`: what goes out on a stream, without the
  connection-specific fields HTTP/2 forbids (RFC 9113 §8.2.2).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from vocelio_proxy.wire.http1.framing import valid_authority

#: The client connection preface (RFC 9113 §3.4).
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

_DATA, _HEADERS, _RST_STREAM, _CONTINUATION = 0, 1, 3, 9
_END_STREAM = 0x1
_END_HEADERS = 0x4

#: Fields that mean something only to one HTTP/1.1 connection: never sent on HTTP/2.
CONNECTION_SPECIFIC = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te"})
#: Fields that may not be trailers (framing and routing): dropped from trailer lists.
_NOT_TRAILERS = CONNECTION_SPECIFIC | {"content-length", "host", "trailer", "content-type", "content-encoding"}

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9a-z]+\Z")
# A method token without lower-case letters (as nginx; llhttp on HTTP/1.1 takes only its own
# upper-case list): `head` or `connect` is never a second spelling of HEAD or CONNECT that the
# gateway frames or refuses one way and a case-folding backend reads another way.
_METHOD = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Z]+\Z")
# RFC 9110 §5.5 field-value: VCHAR, obs-text, SP and HTAB. Every other control (not only
# the CR/LF/NUL RFC 9113 §8.2.1 names) is refused, as llhttp refuses it on HTTP/1.1.
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# A request target that an HTTP/1.1 upstream reads one way only: visible ASCII.
_TARGET = re.compile(rb"/[\x21-\x7e]*\Z")


def _authority_ok(value: bytes) -> bool:
    """`value` is an authority the HTTP/1.1 front accepts as a Host (one grammar for both:
    an HTTP/1.1 upstream never gets a Host from HTTP/2 that HTTP/1.1 clients cannot send)."""
    return value.isascii() and valid_authority(value.decode("ascii"))


@dataclass(frozen=True, slots=True)
class H2Limits:
    """What one HTTP/2 client connection may use (from `settings.Http2Settings`)."""

    max_concurrent_streams: int = 100
    max_header_list_size: int = 32768
    initial_window_size: int = 262144
    connection_window_size: int = 1 << 20
    #: Bytes of one header block (HEADERS plus CONTINUATION payloads) before END_HEADERS.
    max_header_block_bytes: int = 65536
    #: Fields in one request head.
    max_headers: int = 100
    #: Budgets per window: client stream resets (and streams the gateway reset for the
    #: client's errors), and frames that make no progress.
    budget_window_s: float = 10.0
    max_resets: int = 200
    max_control_frames: int = 2000


class WindowBudget:
    """At most `limit` events per `window_s` (a fixed window that restarts when it has passed)."""

    __slots__ = ("_limit", "_spent", "_start", "_window")

    def __init__(self, limit: int, window_s: float) -> None:
        self._limit = limit
        self._window = window_s
        self._start: float | None = None
        self._spent = 0

    def spend(self, now: float) -> bool:
        """Count one event at `now`; True when the budget of this window is exceeded."""
        if self._start is None or now - self._start >= self._window:
            self._start = now
            self._spent = 0
        self._spent += 1
        return self._spent > self._limit

    @property
    def spent(self) -> int:
        return self._spent


class FrameMeter:
    """Follows the frame boundaries of the client's bytes (after the preface) and
    answers a reason to end the connection with ENHANCE_YOUR_CALM, or None."""

    __slots__ = ("_block", "_control", "_head", "_limits", "_preface", "_resets", "_skip", "block_since", "frames")

    def __init__(self, limits: H2Limits) -> None:
        self._limits = limits
        self._preface = len(PREFACE)
        self._head = b""
        self._skip = 0
        self._block = 0
        self._resets = WindowBudget(limits.max_resets, limits.budget_window_s)
        self._control = WindowBudget(limits.max_control_frames, limits.budget_window_s)
        #: When the header block being received started (None: no block is open).
        self.block_since: float | None = None
        #: Frames seen in total.
        self.frames = 0

    def feed(self, data: bytes, now: float) -> str | None:
        i, n = 0, len(data)
        if self._preface:
            take = min(self._preface, n)
            self._preface -= take
            i = take
        while i < n:
            if self._skip:
                take = min(self._skip, n - i)
                self._skip -= take
                i += take
                continue
            need = 9 - len(self._head)
            piece = data[i:i + need]
            self._head += piece
            i += len(piece)
            if len(self._head) < 9:
                break
            head, self._head = self._head, b""
            length = int.from_bytes(head[:3], "big")
            self._skip = length
            verdict = self._frame(head[3], head[4], length, now)
            if verdict is not None:
                return verdict
        return None

    def stream_error(self, now: float) -> str | None:
        """The gateway reset a stream for the client's error: spends the reset budget."""
        if self._resets.spend(now):
            return "too many streams reset (rapid reset)"
        return None

    def _frame(self, kind: int, flags: int, length: int, now: float) -> str | None:
        self.frames += 1
        if kind in (_HEADERS, _CONTINUATION):
            self._block = length if kind == _HEADERS else self._block + length
            if flags & _END_HEADERS:
                self._block = 0
                self.block_since = None
            elif self.block_since is None:
                self.block_since = now
            if self._block > self._limits.max_header_block_bytes:
                return f"header block over {self._limits.max_header_block_bytes} bytes (CONTINUATION flood)"
            return None
        if kind == _RST_STREAM:
            return self.stream_error(now)
        if kind == _DATA and (length or flags & _END_STREAM):
            return None
        # SETTINGS, PING, WINDOW_UPDATE, PRIORITY, PUSH_PROMISE, GOAWAY (the connection may
        # go on draining after the client's GOAWAY), empty DATA, unknown types.
        if self._control.spend(now):
            return "too many frames without progress (control frame flood)"
        return None


@dataclass(slots=True)
class RequestHead:
    method: str
    target: str
    authority: str
    headers: list[tuple[str, str]]
    lookup: dict[str, str]
    content_length: int | None
    head_bytes: int


class MalformedRequest(ValueError):
    """A request head that is malformed in HTTP/2 (RFC 9113 §8.1.1): a stream error."""


_PSEUDO = frozenset({b":method", b":path", b":authority", b":scheme"})


def request_head(fields: Sequence[tuple[bytes, bytes]], max_headers: int, ended: bool = False) -> RequestHead:
    """The request a stream carries, or `MalformedRequest` (the stream is reset).
    `ended`: the HEADERS frame ended the stream (no DATA follows), so a Content-Length
    other than 0 is malformed (RFC 9113 §8.1.1; h2 checks it only against DATA)."""
    pseudo: dict[bytes, bytes] = {}
    headers: list[tuple[str, str]] = []
    lookup: dict[str, str] = {}
    cookies: list[str] = []
    size = 0
    for name, value in fields:
        size += len(name) + len(value)
        if _BAD_VALUE.search(value):
            raise MalformedRequest(f"the value of {name[:64]!r} holds a control character")
        if name[:1] == b":":
            if name not in _PSEUDO:
                raise MalformedRequest(f"pseudo-header {name[:64]!r} is not allowed in a request")
            pseudo[name] = value
            continue
        if not _TOKEN.match(name):
            raise MalformedRequest(f"invalid field name {name[:64]!r}")
        key = name.decode("ascii")
        text = value.decode("latin-1")
        if key == "cookie":
            cookies.append(text)
            continue
        headers.append((key, text))
        lookup[key] = f"{lookup[key]}, {text}" if key in lookup else text
    if cookies:
        joined = "; ".join(cookies)
        headers.append(("cookie", joined))
        lookup["cookie"] = joined
    if len(headers) > max_headers:
        raise MalformedRequest(f"more than {max_headers} header fields")
    method, target = _check_pseudo(pseudo, lookup)
    declared = _content_length(lookup)
    if ended and declared:
        raise MalformedRequest("content-length on a request without a body")
    return RequestHead(method, target, lookup["host"], headers, lookup, declared, size)


def _check_pseudo(pseudo: dict[bytes, bytes], lookup: dict[str, str]) -> tuple[str, str]:
    """(method, target) once the pseudo-headers can be written as an HTTP/1.1 request
    line and Host without changing meaning; sets `lookup["host"]` from `:authority`."""
    method = pseudo.get(b":method", b"")
    target = pseudo.get(b":path", b"")
    authority = pseudo.get(b":authority", b"")
    if not _METHOD.match(method):
        raise MalformedRequest("invalid :method")
    if method == b"CONNECT":
        # A valid CONNECT (h2 checked its form: :authority only) reaches the pipeline with the
        # authority as its target, as on HTTP/1.1, and is refused there with 405.
        if not authority or not _authority_ok(authority):
            raise MalformedRequest("invalid :authority")
        lookup["host"] = authority.decode("ascii")
        return "CONNECT", authority.decode("ascii")
    if pseudo.get(b":scheme") not in (b"http", b"https"):
        raise MalformedRequest("invalid :scheme")
    if not (_TARGET.match(target) or (target == b"*" and method == b"OPTIONS")):
        raise MalformedRequest("invalid :path")
    if authority and not _authority_ok(authority):
        raise MalformedRequest("invalid :authority")
    host = lookup.get("host")
    if authority:
        if host is not None and host.lower() != authority.decode("ascii").lower():
            raise MalformedRequest(":authority and Host differ")
        lookup["host"] = authority.decode("ascii")
    elif host is None or not _authority_ok(host.encode("latin-1")):
        raise MalformedRequest("no valid :authority or Host")
    return method.decode("ascii"), target.decode("ascii")


def _content_length(lookup: dict[str, str]) -> int | None:
    declared = lookup.get("content-length")
    if declared is None:
        return None
    values = {v.strip() for v in declared.split(",")}
    value = values.pop()
    if values or not value.isdigit() or len(value) > 18:
        raise MalformedRequest("invalid content-length")
    return int(value)


def _fields(headers: Iterable[tuple[str, str]], dropped: frozenset[str]) -> list[tuple[bytes, bytes]]:
    out: list[tuple[bytes, bytes]] = []
    for name, value in headers:
        key = name.lower().encode("latin-1", "replace")
        if key.decode("latin-1") in dropped or not _TOKEN.match(key):
            continue
        data = value.strip().encode("latin-1", "replace")
        if _BAD_VALUE.search(data):
            continue
        out.append((key, data))
    return out


_RESPONSE_DROPPED = CONNECTION_SPECIFIC | {"content-length"}


def response_fields(status: int, headers: Iterable[tuple[str, str]], length: int | None) -> list[tuple[bytes, bytes]]:
    """A response head for HTTP/2: `:status` first, names in lower case, no
    connection-specific fields, the gateway's own Content-Length (`length`)."""
    out = [(b":status", str(status).encode("ascii")), *_fields(headers, _RESPONSE_DROPPED)]
    if length is not None:
        out.append((b"content-length", str(length).encode("ascii")))
    return out


def trailer_fields(trailers: Iterable[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    """Trailers for HTTP/2: no pseudo-headers, no framing or connection fields."""
    return _fields(trailers, _NOT_TRAILERS)
