"""Writes gateway-generated responses (the error envelope, the gateway's own
endpoints) and adds the headers every response carries: the request id, the
security headers (unless the upstream set them), rate-limit fields and CORS.
Used by the request pipeline and the proxy handler; the bytes go out through a
`ResponseWriter`."""

from __future__ import annotations

from collections.abc import Collection

from vocelio_proxy.policy.error_envelope import Refusal, error_body
from vocelio_proxy.policy.grpc_status import is_grpc, trailers_only
from vocelio_proxy.wire.exchange import Exchange, ResponseWriter

SECURITY_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "strict-origin-when-cross-origin"),
)
_SECURITY = tuple((name, name.lower(), value) for name, value in SECURITY_HEADERS)
JSON = "application/json; charset=utf-8"


def add_gateway_headers(ex: Exchange, headers: list[tuple[str, str]], present: Collection[str]) -> None:
    """Append the gateway's own response headers; `present` holds the lower-case
    names already in `headers` (those keep their values)."""
    headers.append(("X-Request-ID", ex.request_id or "unknown"))
    for name, lower, value in _SECURITY:
        if lower not in present:
            headers.append((name, value))
    if ex.hsts is not None and "strict-transport-security" not in present:
        # Only on answers the client receives over https (RFC 6797 §7.2; `tls.hsts`, docs/tls.md).
        headers.append(("Strict-Transport-Security", ex.hsts))
    for extra in (ex.extra_headers, ex.cors_headers):
        if extra:
            for name, value in extra.items():
                if name.lower() not in present:
                    headers.append((name, value))


def send_reply(out: ResponseWriter, ex: Exchange, status: int, body: bytes, content_type: str | None = JSON,
               headers: dict[str, str] | None = None) -> None:
    """A whole gateway-generated response."""
    head: list[tuple[str, str]] = [("Date", out.date)]
    if content_type is not None:
        head.append(("Content-Type", content_type))
    if headers:
        head.extend(headers.items())
    add_gateway_headers(ex, head, {k.lower() for k, _ in head})
    out.send(ex, status, head, body)


def send_error(out: ResponseWriter, ex: Exchange, wall_time: float, refusal: Refusal) -> None:
    """The product's JSON error envelope; for a gRPC request, a Trailers-Only answer
    (HTTP 200, no body, the error as `grpc-status` and `grpc-message`) instead,
    since gRPC clients read the status there and nothing else."""
    if is_grpc(ex.lookup.get("content-type")):
        head = [("Date", out.date), *trailers_only(refusal.status, refusal.message, refusal.retry_after)]
        if refusal.headers:
            head.extend(refusal.headers.items())
        add_gateway_headers(ex, head, {k.lower() for k, _ in head})
        out.send(ex, 200, head, b"")
        # The wire says 200 for gRPC's sake; metrics and the access log count the
        # refusal as what it is (a 429 is a rate limit, a 503 an outage).
        ex.status = refusal.status
        return
    retry_after = refusal.retry_after
    headers = dict(refusal.headers or {})
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, int(retry_after + 0.999)))
    body = error_body(refusal.status, refusal.message, ex.request_id or "unknown", wall_time, retry_after)
    send_reply(out, ex, refusal.status, body, "application/json", headers)
