"""Builds gateway-generated responses (the error envelope) at the aiohttp
edge. Used by every handler and middleware that answers on its own."""

from __future__ import annotations

from aiohttp import web

from . import keys
from .errors import error_body


def error_response(request: web.Request, status: int, message: str, *, retry_after: float | None = None,
                   headers: dict[str, str] | None = None) -> web.Response:
    rid = request.get(keys.REQUEST_ID) or "unknown"
    wall = request.app[keys.CLOCK].wall()
    body = error_body(status, message, rid, wall, retry_after)
    resp = web.Response(status=status, body=body, content_type="application/json")
    if retry_after is not None:
        resp.headers["Retry-After"] = str(max(1, int(retry_after + 0.999)))
    if headers:
        resp.headers.update(headers)
    return resp
