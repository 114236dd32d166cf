"""The product's JSON error envelope for every gateway-generated error. Pure:
the proxy's edges turn the returned body into a response."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

REASONS = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    408: "Request timeout",
    413: "Payload too large",
    414: "URI too long",
    421: "Misdirected request",
    429: "Too many requests",
    431: "Request header fields too large",
    500: "Internal server error",
    501: "Not implemented",
    502: "Bad gateway",
    503: "Service unavailable",
    504: "Gateway timeout",
    505: "HTTP version not supported",
}


def error_body(status: int, message: str, request_id: str, wall_time: float,
               retry_after: float | None = None, **extra: Any) -> bytes:
    timestamp = dt.datetime.fromtimestamp(wall_time, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    body: dict[str, Any] = {
        "error": REASONS.get(status, "Error"),
        "message": message,
        "status_code": status,
        "timestamp": timestamp,
        "request_id": request_id,
    }
    if retry_after is not None:
        body["retry_after"] = max(1, int(retry_after + 0.999))
    body.update(extra)
    return json.dumps(body).encode()


@dataclass(frozen=True, slots=True)
class Refusal:
    """A decision to answer with the error envelope instead of forwarding."""

    status: int
    message: str
    retry_after: float | None = None
    headers: dict[str, str] | None = None
