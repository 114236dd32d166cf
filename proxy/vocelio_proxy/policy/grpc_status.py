"""gRPC's view of the gateway's answers. Pure: which requests are gRPC, the gRPC
status code a gateway error or an upstream HTTP status stands for, the
Trailers-Only error response that replaces the JSON envelope for gRPC clients,
and the `grpc-timeout` header (read as a deadline, written for the upstream).

Used by `pipeline.responses.send_error` (every gateway-generated error goes
through it) and by `pipeline.grpc_proxying` (upstream answers without a
`grpc-status`, deadlines).

The code map follows grpc's doc/http-grpc-status-mapping.md for statuses a
gRPC server never sends itself, with the gateway's own meanings where the
gateway knows more than an intermediary's HTTP status says: a 429 is a rate
limit (RESOURCE_EXHAUSTED, so clients do not retry it as a blip), a 504 or 408
is a deadline (DEADLINE_EXCEEDED), a 413 or 431 is a size limit
(RESOURCE_EXHAUSTED).

An upstream's own status reaches the client only when it is one: a single
`grpc-status` of 1-3 ASCII digits (`status_problem`); otherwise the gateway
says INTERNAL, never OK, as gRPC clients do for a call that ended without a
status (grpc-go: "server closed the stream without sending trailers")."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

OK: Final = 0
CANCELLED: Final = 1
UNKNOWN: Final = 2
INVALID_ARGUMENT: Final = 3
DEADLINE_EXCEEDED: Final = 4
NOT_FOUND: Final = 5
PERMISSION_DENIED: Final = 7
RESOURCE_EXHAUSTED: Final = 8
UNIMPLEMENTED: Final = 12
INTERNAL: Final = 13
UNAVAILABLE: Final = 14
UNAUTHENTICATED: Final = 16

#: HTTP status of a gateway (or upstream) answer -> gRPC status code.
_FROM_HTTP: Final[dict[int, int]] = {
    400: INTERNAL,            # the mapping doc: a malformed request is the transport's fault
    401: UNAUTHENTICATED,
    403: PERMISSION_DENIED,
    404: UNIMPLEMENTED,       # no route: the method is not served here
    405: UNIMPLEMENTED,
    408: DEADLINE_EXCEEDED,   # the request (body) did not arrive in time
    413: RESOURCE_EXHAUSTED,  # message larger than allowed
    421: UNAVAILABLE,         # misdirected: another authority may serve it
    429: RESOURCE_EXHAUSTED,  # rate limited
    431: RESOURCE_EXHAUSTED,  # metadata larger than allowed
    500: INTERNAL,
    501: UNIMPLEMENTED,
    502: UNAVAILABLE,
    503: UNAVAILABLE,
    504: DEADLINE_EXCEEDED,
}

#: `grpc-timeout` units in seconds (the gRPC over HTTP/2 spec, "Requests").
_UNITS: Final[dict[str, float]] = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
_MAX_MESSAGE: Final = 1024


def status_problem(fields: Iterable[tuple[str, str]]) -> str | None:
    """Why `fields` (an upstream's trailers, or its Trailers-Only head) carry no usable
    gRPC status: "missing", "invalid" (not 1-3 ASCII digits) or "repeated"; None when
    they carry exactly one."""
    values = [v for k, v in fields if k.lower() == "grpc-status"]
    if not values:
        return "missing"
    if len(values) > 1:
        return "repeated"
    value = values[0].strip()
    if not (0 < len(value) <= 3 and value.isascii() and value.isdigit()):
        return "invalid"
    return None


def replace_status(fields: Iterable[tuple[str, str]], code: int, message: str) -> list[tuple[str, str]]:
    """`fields` without their grpc-status and grpc-message, then `code` and `message`."""
    kept = [(k, v) for k, v in fields if k.lower() not in ("grpc-status", "grpc-message")]
    return [*kept, ("grpc-status", str(code)), ("grpc-message", encode_message(message))]


def code_for_http(status: int) -> int:
    """The gRPC status code standing for HTTP `status` (UNKNOWN when none fits)."""
    return _FROM_HTTP.get(status, UNKNOWN)


def is_grpc(content_type: str | None) -> bool:
    """True for `application/grpc` and its `+format` / parameter variants (gRPC-Web
    too: its clients also read a Trailers-Only answer from the headers)."""
    if not content_type or len(content_type) < 16:
        return False
    media = content_type[:16].lower()
    if media != "application/grpc":
        return False
    rest = content_type[16:17]
    return rest in ("", "+", ";", "-")


def encode_message(message: str) -> str:
    """`grpc-message` as the spec writes it: UTF-8, every byte outside printable
    ASCII (and `%` itself) percent-encoded; bounded so an error never grows a header
    past what clients accept."""
    data = message.encode("utf-8")[:_MAX_MESSAGE]
    out = []
    for byte in data:
        if 0x20 <= byte <= 0x7E and byte != 0x25:
            out.append(chr(byte))
        else:
            out.append(f"%{byte:02X}")
    return "".join(out)


def trailers_only(status: int, message: str, retry_after: float | None = None) -> list[tuple[str, str]]:
    """The header fields of a Trailers-Only answer (sent with HTTP status 200 and no
    body) to a gRPC request the gateway refused with HTTP `status`. A retry delay
    becomes `grpc-retry-pushback-ms` (gRFC A6), which gRPC clients honour."""
    fields = [("content-type", "application/grpc"), ("grpc-status", str(code_for_http(status))),
              ("grpc-message", encode_message(message))]
    if retry_after is not None:
        fields.append(("grpc-retry-pushback-ms", str(max(0, int(retry_after * 1000)))))
    return fields


def parse_timeout(value: str) -> float | None:
    """A `grpc-timeout` value (1-8 ASCII digits and a unit) in seconds; None when it
    is not one (the caller refuses the request, as gRPC servers do)."""
    if not 2 <= len(value) <= 9:
        return None
    digits, unit = value[:-1], value[-1]
    scale = _UNITS.get(unit)
    if scale is None or not digits.isascii() or not digits.isdigit():
        return None
    return int(digits) * scale


def format_timeout(seconds: float) -> str:
    """A deadline `seconds` away as a `grpc-timeout` value for the upstream: in
    milliseconds, rounded up so an upstream never gives up before the gateway,
    in a larger unit when the value would not fit 8 digits."""
    millis = max(1, int(seconds * 1000 + 0.999))
    if millis < 100_000_000:
        return f"{millis}m"
    return f"{min(99_999_999, int(seconds + 0.999))}S"
