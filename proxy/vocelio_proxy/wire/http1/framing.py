"""Framing and connection decisions of HTTP/1.1 (RFC 9112 §6, §9; RFC 9110
§7.2), as plain functions over parsed values:

- requests: the request-target forms and what they mean (fragment, origin,
  absolute, asterisk and authority form), the Host rules, which body framing
  a request has (Content-Length, chunked, or none) and which combinations are
  refused, keep-alive and `Expect: 100-continue`;
- responses the gateway writes: the Content-Length / chunked / close-delimited
  choice and the Connection header;
- responses an upstream sends: how their body is delimited and whether the
  connection can be reused.

Refusals are `WireError(status, message)`. Called by `reader` (requests), the
server (responses it writes) and the upstream client (responses it reads).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable


class WireError(Exception):
    """A message the gateway refuses: `status` (4xx/5xx) and a message safe to
    show the client (no internal addresses)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# -- requests ---------------------------------------------------------------------

#: Fields a request may carry at most once. Host: RFC 9112 §3.2 (MUST 400).
#: Content-Length: RFC 9112 §6.3 allows identical repeats; a gateway refuses them
#: so that no downstream reads another length. Transfer-Encoding: one field,
#: exactly `chunked` (see `request_body_framing`).
SINGLETON_FIELDS = frozenset({"host", "content-length", "transfer-encoding"})

# uri-host [ ":" port ] (RFC 9110 §7.2 -> RFC 3986 §3.2.2): an IP literal in
# brackets, or a reg-name / IPv4 of unreserved, pct-encoded and sub-delims
# characters. No userinfo ("@"), no path, no spaces.
_AUTHORITY = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]*)(?::[0-9]*)?")
_SCHEMES = ("http://", "https://")


def index_headers(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Fields by lower-case name, repeats joined with ", " (RFC 9110 §5.3);
    a repeated singleton field is refused with 400."""
    lookup: dict[str, str] = {}
    for name, value in headers:
        key = name.lower()
        prior = lookup.get(key)
        if prior is None:
            lookup[key] = value
        elif key in SINGLETON_FIELDS:
            raise WireError(400, f"More than one {name} header field")
        else:
            lookup[key] = f"{prior}, {value}"
    return lookup


def valid_authority(value: str) -> bool:
    """A Host field value or an absolute-form authority: `host[:port]`, empty allowed
    (RFC 9110 §7.2: an empty Host is valid when the target has no authority)."""
    return _AUTHORITY.fullmatch(value) is not None


def request_target(method: str, url: str) -> tuple[str, str | None]:
    """(origin-form target, authority from the target or None) for a
    request-target as received (RFC 9112 §3.2).

    - A fragment (`#`) is refused: no request-target form has one, and a target
      that means one thing to the gateway must not mean another to the backend.
    - origin-form (`/path?query`): as is.
    - absolute-form (`http://host/path?q`): the authority replaces Host
      (RFC 9112 §3.2.2) and the path and query go on; userinfo is refused
      (RFC 9110 §4.2.4); only the http and https schemes.
    - asterisk-form (`*`): OPTIONS only (RFC 9112 §3.2.4).
    - authority-form (`host:port`): CONNECT only (RFC 9112 §3.2.3).
    """
    if "#" in url:
        raise WireError(400, "The request target contains a fragment ('#')")
    if not url.isascii() or not url.isprintable() or " " in url:
        raise WireError(400, "The request target contains a forbidden character")
    if method == "CONNECT":
        if not url or not valid_authority(url) or ":" not in url:
            raise WireError(400, "CONNECT needs an authority-form request target (host:port)")
        return url, url
    if url[:1] == "/":
        return url, None
    if url == "*":
        if method != "OPTIONS":
            raise WireError(400, "The asterisk-form request target is only valid for OPTIONS")
        return url, None
    lower = url[:8].lower()
    for scheme in _SCHEMES:
        if lower.startswith(scheme):
            rest = url[len(scheme):]
            cut = len(rest)
            for sep in ("/", "?"):
                at = rest.find(sep)
                if 0 <= at < cut:
                    cut = at
            authority, tail = rest[:cut], rest[cut:]
            if "@" in authority:
                raise WireError(400, "The request target carries userinfo")
            if not authority or not valid_authority(authority):
                raise WireError(400, "Invalid authority in the request target")
            if not tail.startswith("/"):
                tail = "/" + tail
            return tail, authority
    raise WireError(400, "Invalid request target")


def transfer_codings(value: str) -> list[str]:
    """The transfer codings of a Transfer-Encoding value, lower-case, in order."""
    return [c.strip().lower() for c in value.split(",")]


def request_body_framing(version: str, lookup: dict[str, str]) -> tuple[int | None, bool]:
    """(declared Content-Length or None, chunked) of a request's body, or a refusal.

    RFC 9112 §6.1-6.3, stricter where the RFC only permits:
    - Transfer-Encoding in an HTTP/1.0 request: the framing is faulty (§6.1): 400.
    - Transfer-Encoding with Content-Length: 400 (§6.3 lets a server go on with
      chunked and close; refusing leaves no two readings of one message).
    - A Transfer-Encoding that is not exactly `chunked`: 400 when chunked is not
      the final coding (§6.3 rule 4, MUST), 501 for codings before it that the
      gateway does not implement (§6.1, SHOULD). `chunked` twice: 400 (§7).
    - A Content-Length that is not one decimal number: 400 (§6.3 rule 5).
    """
    te = lookup.get("transfer-encoding")
    cl = lookup.get("content-length")
    if te is not None:
        if version != "1.1":
            raise WireError(400, "Transfer-Encoding is not allowed in an HTTP/1.0 request")
        if cl is not None:
            raise WireError(400, "A request cannot have both Content-Length and Transfer-Encoding")
        if te != "chunked":
            codings = transfer_codings(te)
            if codings != ["chunked"]:
                if codings[-1] != "chunked" or codings.count("chunked") > 1:
                    raise WireError(400, "The request's Transfer-Encoding does not end with chunked")
                raise WireError(501, "Only the chunked transfer coding is supported")
        return None, True
    if cl is not None:
        return parse_content_length(cl), False
    return None, False


def parse_content_length(value: str) -> int:
    """A Content-Length value: one decimal number (1*DIGIT, RFC 9110 §8.6)."""
    if not value or not value.isascii() or not value.isdigit() or len(value) > 18:
        raise WireError(400, "Invalid Content-Length")
    return int(value)


def request_keep_alive(version: str, connection: str | None) -> bool:
    """Whether the client asks for the connection to persist (RFC 9112 §9.3):
    HTTP/1.1 unless `close` is listed; HTTP/1.0 only with `keep-alive` listed."""
    if connection is None:
        return version == "1.1"
    tokens = transfer_codings(connection)
    if "close" in tokens:
        return False
    return version == "1.1" or "keep-alive" in tokens


def expects_continue(version: str, expect: str | None) -> bool:
    """`Expect: 100-continue` on HTTP/1.1 (an HTTP/1.0 request's is ignored, RFC 9110 §10.1.1)."""
    return expect is not None and version == "1.1" and expect.strip().lower() == "100-continue"


# -- responses the gateway writes ---------------------------------------------------

_NO_BODY_STATUSES = frozenset({204, 304})
_CHUNKED = "Transfer-Encoding: chunked\r\n"
_CLOSE = "Connection: close\r\n"
_KEEP_ALIVE = "Connection: keep-alive\r\n"


def response_has_body(status: int, head_request: bool) -> bool:
    """A response carries content unless it answers HEAD or is 1xx, 204 or 304 (RFC 9112 §6.3)."""
    return not head_request and status >= 200 and status not in _NO_BODY_STATUSES


def response_framing(version: str, keep: bool, status: int, length: int | None) -> tuple[str, bool, bool]:
    """(framing header lines, chunked, keep-alive) of a response the gateway writes.

    `keep` says whether the connection may persist (the client asked and its
    request was read whole); `length` is the body length, None when streamed.
    A streamed body is chunked for HTTP/1.1 and close-delimited for HTTP/1.0.
    1xx, 204 and 304 carry no framing (RFC 9110 §8.6, RFC 9112 §6.1)."""
    chunked = False
    if status < 200 or status in _NO_BODY_STATUSES:
        framing = ""
    elif length is not None:
        framing = f"Content-Length: {length}\r\n"
    elif version == "1.1":
        chunked = True
        framing = _CHUNKED
    else:
        keep = False
        framing = ""
    if not keep:
        return framing + _CLOSE, chunked, False
    if version == "1.0":
        return framing + _KEEP_ALIVE, chunked, True
    return framing, chunked, True


# -- responses an upstream sends --------------------------------------------------

#: How an upstream response body is delimited (RFC 9112 §6.3).
NO_BODY, BY_LENGTH, CHUNKED, UNTIL_CLOSE = 0, 1, 2, 3


def upstream_body_framing(status: int, head_request: bool, version: str | Callable[[], str],
                          headers: Iterable[tuple[str, str]]) -> tuple[int, bool]:
    """(one of NO_BODY/BY_LENGTH/CHUNKED/UNTIL_CLOSE, framing allows reuse) of an
    upstream response head (interim 1xx heads included), or a refusal (WireError 502).
    `version` ("1.1") may be given as a function, called only when the answer is
    chunked (the one rule that needs it).

    - A status outside 100-599: refused.
    - Transfer-Encoding with Content-Length: refused; RFC 9112 §6.3 rule 3 lets
      Transfer-Encoding win but calls it a likely smuggling attempt, and the
      gateway does not relay a message two readers could frame differently.
    - Content-Length: one decimal number, exactly one field, else refused (rule 5),
      whatever the status.
    - 1xx, 204, 304 and answers to HEAD have no body (rule 1). A head of one of
      them that announces bytes anyway (a Transfer-Encoding, a Content-Length
      other than 0) leaves the connection unusable: the announced bytes may
      still come, and on a reused connection they would be read as the next
      request's answer. A 1xx that announces bytes is refused outright (RFC 9110
      §8.6, RFC 9112 §6.1: MUST NOT), since the parser would read them into the
      final answer; for a 204 it is a MUST NOT too, but the answer itself is
      harmless and is relayed; for 304 and HEAD they are allowed (the length a
      GET would have had), and the connection is still not reused.
    - Transfer-Encoding ending in chunked: chunked; in an HTTP/1.0 response the
      framing is faulty (§6.1) and the connection is not reused.
    - Transfer-Encoding not ending in chunked: read until close (rule 4), not reused.
    - Neither: read until close (rule 8), not reused.
    """
    if not 100 <= status <= 599:
        raise WireError(502, f"invalid upstream status code {status}")
    te = cl = None
    for name, value in headers:
        lower = name.lower()
        if lower == "content-length":
            if cl is not None:
                raise WireError(502, "upstream response with more than one Content-Length")
            cl = value
        elif lower == "transfer-encoding":
            te = value if te is None else f"{te}, {value}"
    if te is not None and cl is not None:
        raise WireError(502, "upstream response with both Content-Length and Transfer-Encoding")
    length = 0
    if cl is not None:
        try:
            length = parse_content_length(cl)
        except WireError:
            raise WireError(502, "upstream response with an invalid Content-Length") from None
    if head_request or status < 200 or status in _NO_BODY_STATUSES:
        # Bytes announced where none may follow: a `te` or a non-zero length.
        if te is None and length == 0:
            return NO_BODY, True
        if status < 200:
            raise WireError(502, "interim upstream response that announces a body")
        return NO_BODY, False
    if te is not None:
        codings = transfer_codings(te)
        if codings[-1] == "chunked":
            http11 = (version() if callable(version) else version) == "1.1"
            return CHUNKED, http11 and codings.count("chunked") == 1
        return UNTIL_CLOSE, False
    if cl is not None:
        return BY_LENGTH, True
    return UNTIL_CLOSE, False
