"""Message heads on the wire: the one table of reason phrases, status lines,
and the serialisation of response and request heads.

Every head the gateway writes goes through here: the client-facing server
(`server.HttpConnection.send/start`), the upstream client and health checks
(`request_head`) and the tunnel (`status_line`, `response_head`). The builders
refuse a head that a header name or value could split (CR or LF inside a
field: response splitting / request smuggling) with `HeadError`, checked in
one pass over the finished text rather than per field.
"""

from __future__ import annotations

from collections.abc import Sequence

#: Reason phrases of the registered status codes (IANA HTTP Status Code
#: Registry, RFC 9110 §15). A reason phrase is informational only (RFC 9112
#: §4): unknown codes get an empty one, which the grammar allows.
REASONS: dict[int, str] = {
    100: "Continue", 101: "Switching Protocols", 102: "Processing", 103: "Early Hints",
    200: "OK", 201: "Created", 202: "Accepted", 203: "Non-Authoritative Information", 204: "No Content",
    205: "Reset Content", 206: "Partial Content", 207: "Multi-Status", 208: "Already Reported", 226: "IM Used",
    300: "Multiple Choices", 301: "Moved Permanently", 302: "Found", 303: "See Other", 304: "Not Modified",
    305: "Use Proxy", 307: "Temporary Redirect", 308: "Permanent Redirect",
    400: "Bad Request", 401: "Unauthorized", 402: "Payment Required", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 406: "Not Acceptable", 407: "Proxy Authentication Required",
    408: "Request Timeout", 409: "Conflict", 410: "Gone", 411: "Length Required", 412: "Precondition Failed",
    413: "Content Too Large", 414: "URI Too Long", 415: "Unsupported Media Type", 416: "Range Not Satisfiable",
    417: "Expectation Failed", 421: "Misdirected Request", 422: "Unprocessable Content", 423: "Locked",
    424: "Failed Dependency", 425: "Too Early", 426: "Upgrade Required", 428: "Precondition Required",
    429: "Too Many Requests", 431: "Request Header Fields Too Large", 451: "Unavailable For Legal Reasons",
    500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable",
    504: "Gateway Timeout", 505: "HTTP Version Not Supported", 506: "Variant Also Negotiates",
    507: "Insufficient Storage", 508: "Loop Detected", 510: "Not Extended", 511: "Network Authentication Required",
}

# Every valid status code (RFC 9110 §15: 100-599) has its line precomputed, so
# writing a head never formats the status.
_STATUS_LINES: dict[int, str] = {code: f"HTTP/1.1 {code} {REASONS.get(code, '')}\r\n" for code in range(100, 600)}

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class HeadError(ValueError):
    """A head that cannot be written safely: a CR or LF inside a field, a space or
    control character in a request target, or a status outside 100-599."""


def status_line(status: int) -> str:
    """`HTTP/1.1 <code> <reason>` with its CRLF, for a code in 100-599."""
    try:
        return _STATUS_LINES[status]
    except KeyError:
        raise HeadError(f"status {status} is not a valid HTTP status code") from None


def _checked(text: str, lines: int) -> bytes:
    # A head of N lines has exactly N CRs and N LFs; one more of either means a
    # field carried a line break of its own. Two C-speed counts over the text
    # are cheaper than inspecting every name and value.
    if text.count("\n") != lines or text.count("\r") != lines:
        raise HeadError("a header field contains a line break")
    return text.encode("latin-1")


def response_head(status: int, headers: Sequence[tuple[str, str]], framing: str = "") -> bytes:
    """A whole response head: status line, `headers` in order, then `framing`
    (the Content-Length/Transfer-Encoding/Connection lines from `framing.py`,
    each ending in CRLF) and the blank line."""
    text = status_line(status) + "".join([f"{k}: {v}\r\n" for k, v in headers]) + framing + "\r\n"
    return _checked(text, len(headers) + framing.count("\n") + 2)


#: Names a caller's header list may not carry into a request head: the head
#: builder writes Host and the framing itself, from the body it will send.
_REQUEST_OWNED = frozenset({"host", "content-length", "transfer-encoding"})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def request_head(method: str, target: str, host: str, headers: Sequence[tuple[str, str]],
                 body_length: int | None) -> bytes:
    """A request head for an upstream: request line, Host, `headers` (without
    any Host, Content-Length or Transfer-Encoding of their own), then the
    framing: `body_length` None means a chunked body, 0 means none (Content-Length: 0
    for methods that normally carry a body, RFC 9110 §8.6)."""
    if not target or " " in target or not target.isprintable():
        raise HeadError("the request target contains a space or a control character")
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    for name, value in headers:
        if name.lower() in _REQUEST_OWNED:
            continue
        lines.append(f"{name}: {value}")
    if body_length is None:
        lines.append("Transfer-Encoding: chunked")
    elif body_length > 0 or method in _BODY_METHODS:
        lines.append(f"Content-Length: {body_length}")
    return _checked("\r\n".join(lines) + "\r\n\r\n", len(lines) + 1)
