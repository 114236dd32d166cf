"""The request pipeline every client request goes through, in order: request
id and client address (through trusted proxies), early refusals (method,
header names with underscores, host, CORS preflight, declared body size), path
normalisation, the gateway's own endpoints or the proxy, a catch-all error
envelope, then the request metrics and one access-log line (JSON, or text
with `log_format: text`). Built once per listener by the composition root
(`lifecycle.app.gateway_handler`), with the collaborators it uses passed in, and
called by the server for each
`Exchange`: `GatewayHandler` for the public listener, `AdminHandler` for the
admin listener (gateway endpoints only).

What the pipeline decides once, so nothing after it reads a second meaning:

* the client address (`forwarded_headers.ForwardedTrust`); with trusted-proxy CIDRs,
  the X-Forwarded-Proto/Host of a peer that is not a trusted proxy are removed
  from the request here (the forwarded-header policy then trusts what is left);
* header names with `_` (`headers_with_underscores`): dropped from the request
  (default), refused with 400, or kept (their gateway-owned spellings are
  dropped by the forwarded-header policy anyway);
* the `Host` against `trusted_hosts` with the one authority parser: not an
  authority is 400, another host is 421;
* the request target: a `#` anywhere in it (path or query) is 400, before
  routing (RFC 9112 3.2: a request target has no fragment; a backend that cuts
  at `#` would serve another path or query than the one routed and logged).

Every access-log field that can carry text a client chose (method, path,
service, upstream, request id, client address) is written JSON-escaped, so no
input can split or forge a log line.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from json.encoder import encode_basestring_ascii

from vocelio_contract.hosts import request_host
from vocelio_contract.logs import text_value
from vocelio_contract.paths import PathError, normalize_path
from vocelio_proxy.pipeline.endpoints import ENDPOINTS, GatewayView, Reply
from vocelio_proxy.pipeline.proxying import Proxy
from vocelio_proxy.pipeline.responses import send_error, send_reply
from vocelio_proxy.policy.authority import parse_authority
from vocelio_proxy.policy.cors import preflight_headers, response_headers
from vocelio_proxy.policy.error_envelope import Refusal
from vocelio_proxy.policy.forwarded_headers import ForwardedTrust, accept_request_id, without_underscored
from vocelio_proxy.policy.https_redirect import HttpsRedirect, forwarded_https
from vocelio_proxy.policy.tracecontext import ids
from vocelio_proxy.process.accesslog import AccessLog
from vocelio_proxy.process.metrics import CODE_LABELS as _CODES
from vocelio_proxy.process.tracing import SpanExporter
from vocelio_proxy.settings import ProxySettings
from vocelio_proxy.wire.exchange import BodyError, Exchange
from vocelio_proxy.wire.tunnel import UpgradableWriter

log = logging.getLogger("vocelio.proxy")
#: A str as a JSON string literal, ASCII only (C-accelerated; escapes quotes, control
#: characters, line separators and everything non-ASCII).
_json = encode_basestring_ascii

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: Longest user agent and caller name logged (characters; the rest is cut).
_MAX_AGENT = 256
_MAX_NAME = 128
#: A host name is at most 253 characters; a port and a bracketed IPv6 literal add a few.
_MAX_HOST = 270
_ENDPOINT_METHODS = frozenset({"GET", "HEAD"})
#: HTTP versions counted by name (`Exchange.version`: the server sets one of these).
_VERSIONS = frozenset({"1.0", "1.1", "2"})
_HOST_MEMO = 256
_FORWARDED_CLAIMS = frozenset({"x-forwarded-proto", "x-forwarded-host"})
_FRAGMENT = "Invalid request target: a request target has no fragment ('#')"
Endpoint = Callable[[GatewayView], Reply]


def admin_only(view: GatewayView) -> Reply:
    """Marks, in the public listener's table, an endpoint served only on the admin
    listener: its path is answered 404 like an unrouted path (never proxied)."""
    return Reply(404, b"")


def public_endpoints(settings: ProxySettings) -> dict[str, Endpoint]:
    """The public listener's table of gateway endpoints (see `admin_only`)."""
    if settings.admin.port is None:
        return dict(ENDPOINTS)
    public = set(settings.admin.public_endpoints)
    return {path: (handler if path in public else admin_only) for path, handler in ENDPOINTS.items()}


class GatewayHandler:
    """The public listener's pipeline. `view` is what the gateway's own endpoints
    read (and the pipeline's settings, metrics and clock); `proxy` serves routed
    requests; `access_log` is None when access logging is off, `spans` when span
    export is."""

    def __init__(self, view: GatewayView, proxy: Proxy, access_log: AccessLog | None,
                 spans: SpanExporter | None = None) -> None:
        settings = view.settings
        self._view = view
        self._settings = settings
        self._path_policy = view.state.path_policy
        self._metrics = view.metrics
        self._clock = view.clock
        self._access_log = access_log
        self._line = self._text_line if settings.log_format == "text" else self._json_line
        self._spans = spans
        self._trust = ForwardedTrust(settings.trusted_proxies, settings.trusted_proxy_cidrs)
        self._check_peers = bool(self._trust.networks)
        self._trusted_hosts = frozenset(settings.trusted_hosts)
        self._hosts: dict[str, int] = {}
        self._underscores = settings.headers_with_underscores
        self._max_body = settings.limits.max_body_bytes
        self._endpoints = public_endpoints(settings)
        self._proxy = proxy
        #: The plain listener's HTTP→HTTPS redirect (`tls.redirect`; set by the composition root).
        self.https_redirect: HttpsRedirect | None = None
        #: This listener's clients speak TLS to it (the TLS listener).
        self.tls = False
        #: The Strict-Transport-Security value for answers over https (`tls.hsts`; None: off).
        self.hsts: str | None = None

    async def __call__(self, ex: Exchange, out: UpgradableWriter) -> None:
        started = time.perf_counter()
        lookup = ex.lookup
        ex.request_id = accept_request_id(lookup.get("x-request-id"))
        trust = self._trust
        if trust.enabled:
            ex.client_ip = trust.client(ex.peer, lookup.get("x-forwarded-for"))
            if (self._check_peers and ("x-forwarded-proto" in lookup or "x-forwarded-host" in lookup)
                    and not trust.peer_trusted(ex.peer)):
                ex.headers = [(k, v) for k, v in ex.headers if k.lower() not in _FORWARDED_CLAIMS]
        if self.hsts is not None and (self.tls or (
                trust.enabled and forwarded_https(lookup.get("x-forwarded-proto")) and trust.peer_trusted(ex.peer))):
            ex.hsts = self.hsts
        metrics = self._metrics
        metrics.in_flight_count += 1
        try:
            await self._dispatch(ex, out)
        except asyncio.CancelledError:  # the server cancels the request of a client that left
            _client_gone(ex, out)
            raise
        except ConnectionError:
            _client_gone(ex, out)
        except BodyError as exc:
            # The client's body broke (framing, stall): answer if nothing was sent, then close.
            if ex.status == 0:
                self._refuse(out, ex, exc.status, exc.message)
            out.close()
        except Exception:
            log.exception("unhandled error", extra={"fields": {"request_id": ex.request_id}})
            if ex.status == 0:
                self._refuse(out, ex, 500, "The gateway failed to handle the request")
            else:
                out.abort()
        finally:
            metrics.in_flight_count -= 1
            self._record(ex, time.perf_counter() - started)

    def _refuse(self, out: UpgradableWriter, ex: Exchange, status: int, message: str,
                headers: dict[str, str] | None = None) -> None:
        send_error(out, ex, self._clock.wall(), Refusal(status, message, headers=headers))

    async def _dispatch(self, ex: Exchange, out: UpgradableWriter) -> None:
        if "#" in ex.target:
            self._refuse(out, ex, 400, _FRAGMENT)
            return
        if self.https_redirect is not None and self._redirected(ex, out, self.https_redirect):
            return
        if self._refused_early(ex, out):
            return
        try:
            path = normalize_path(ex.path, self._path_policy)
        except PathError as exc:
            self._refuse(out, ex, 400, f"Invalid request path: {exc}")
            return
        endpoint = self._endpoints.get(path)
        if endpoint is None or self._host_claims(path, ex.host):
            await self._proxy.handle(ex, out, path)
            return
        if endpoint is admin_only:
            self._refuse(out, ex, 404, f"No service is routed at {path}")
            return
        self._serve_endpoint(ex, out, path, endpoint)

    def _host_claims(self, path: str, host: str) -> bool:
        """A gateway endpoint path that a service naming the request's host routes belongs to
        that service (docs/host-routing.md); on every other host the gateway answers it."""
        rt = self._view.state.runtime
        return rt is not None and rt.router.routes_by_host and rt.router.claims(path, request_host(host))

    def _serve_endpoint(self, ex: Exchange, out: UpgradableWriter, path: str, endpoint: Endpoint) -> None:
        """A gateway endpoint answers GET and HEAD (both listeners)."""
        if ex.method not in _ENDPOINT_METHODS:
            self._refuse(out, ex, 405, f"{path} answers GET and HEAD only", {"Allow": "GET, HEAD"})
            return
        reply = endpoint(self._view)
        send_reply(out, ex, reply.status, reply.body, reply.content_type, reply.headers)

    def _refused_early(self, ex: Exchange, out: UpgradableWriter) -> bool:
        """Hardening before routing: method, host, CORS preflight, declared body size.
        (URL and header sizes are enforced by the server while it parses.)"""
        if ex.method == "CONNECT":
            self._refuse(out, ex, 405, "CONNECT is not supported: this is a reverse proxy")
            return True
        lookup = ex.lookup
        if "_" in "".join(lookup) and self._underscored(ex, out):
            return True
        if self._trusted_hosts:
            verdict = self._host_verdict(lookup.get("host", ""))
            if verdict:
                self._refuse(out, ex, verdict, "Invalid Host header" if verdict == 400 else "Unknown host")
                return True
        origin = lookup.get("origin")
        if origin is not None:
            cors = self._settings.cors
            if ex.method == "OPTIONS" and "access-control-request-method" in lookup:
                allowed = preflight_headers(cors, origin, lookup["access-control-request-method"],
                                            lookup.get("access-control-request-headers", ""))
                if allowed is None:
                    self._refuse(out, ex, 403, "Cross-origin request not allowed")
                else:
                    send_reply(out, ex, 204, b"", None, allowed)
                return True
            ex.cors_headers = response_headers(cors, origin) or None
        length = ex.content_length
        if length is not None and length > self._max_body:
            self._refuse(out, ex, 413, f"Request body exceeds {self._max_body} bytes")
            return True
        return False

    def _redirected(self, ex: Exchange, out: UpgradableWriter, redirect: HttpsRedirect) -> bool:
        """Answer a plain-HTTP request with a 308 to https (policy.https_redirect); True when answered."""
        if not ex.target.startswith("/"):
            return False
        try:
            # Exempt by the path the router will serve, never by its spelling: with a prefix
            # exemption `/public/`, `/public/../account` is `/account` and is redirected.
            exempt = redirect.exempt(normalize_path(ex.path, self._path_policy))
        except PathError:
            exempt = False  # redirected as sent; refused over https if it is invalid there too
        if exempt:
            return False
        lookup = ex.lookup
        trust = self._trust
        if trust.enabled and forwarded_https(lookup.get("x-forwarded-proto")) and trust.peer_trusted(ex.peer):
            return False  # a trusted proxy in front already speaks https to the client
        host = lookup.get("host", "")
        verdict = self._host_verdict(host) if self._trusted_hosts else 0
        location = redirect.location(host, ex.target) if not verdict else None
        if location is None:
            verdict = verdict or 400
            self._refuse(out, ex, verdict, "Invalid Host header" if verdict == 400 else "Unknown host")
            return True
        send_reply(out, ex, 308, b"", None, {"Location": location})
        return True

    def _underscored(self, ex: Exchange, out: UpgradableWriter) -> bool:
        """Apply `headers_with_underscores` to a request with such a header name;
        True when it was refused."""
        mode = self._underscores
        if mode == "reject":
            self._refuse(out, ex, 400, "Header names with underscores are not accepted")
            return True
        if mode == "drop":
            ex.headers = without_underscored(ex.headers)
            for name in [k for k in ex.lookup if "_" in k]:
                del ex.lookup[name]
        return False

    def _host_verdict(self, host: str) -> int:
        """0 when `host` names a trusted host, 400 when it is not an authority, else 421."""
        verdict = self._hosts.get(host)
        if verdict is None:
            parsed = parse_authority(host)
            verdict = 400 if parsed is None else 0 if parsed.host in self._trusted_hosts else 421
            if len(self._hosts) >= _HOST_MEMO:
                self._hosts.clear()
            self._hosts[host] = verdict
        return verdict

    def _record(self, ex: Exchange, elapsed: float) -> None:
        status = ex.status
        method = ex.method if ex.method in _METHODS else "OTHER"
        body = ex.body
        received = ex.head_bytes + (getattr(body, "received", 0) if body is not None else 0)
        metrics = self._metrics
        metrics.count_request(ex.service_label, method, _CODES[status] if 0 <= status < 1000 else "5xx", elapsed)
        metrics.count_bytes(ex.service_label, received, ex.sent_bytes)
        metrics.requests_by_protocol.inc((ex.version if ex.version in _VERSIONS else "other",))
        if ex.span_parent is not None and self._spans is not None:
            self._spans.end(ex, ex.span_parent, status, elapsed)
        if self._access_log is not None:
            self._access_log.write_line(self._line(ex, status, elapsed, received))

    def _json_line(self, ex: Exchange, status: int, elapsed: float, received: int) -> str:
        # Built by hand (json.dumps costs several times more), and every field that can
        # carry text a client chose is escaped: the method, path and host as sent, the service
        # label, the upstream key, the request id, the client address (taken from
        # X-Forwarded-For through trusted proxies), the user agent and the caller's names.
        # Escaping is the guarantee that no input splits or forges a line, whatever
        # validation happened upstream of here. The query string is never logged: clients
        # put tokens there; no credential is ever logged (the caller is named by user,
        # tenant and key id only).
        upstream = _json(ex.upstream) if ex.upstream else "null"
        trace = _trace_ids(ex)
        agent = ex.lookup.get("user-agent")
        caller = ex.caller
        line = (f'{{"ts": {_fixed3(time.time())}, "level": "info", "logger": "vocelio.access", '
                f'"request_id": {_json(ex.request_id)}, "method": {_json(ex.method)}, '
                f'"path": {_json(ex.path)}, "host": {_json(ex.host[:_MAX_HOST])}, '
                f'"service": {_json(ex.service_label)}, '
                f'"status": {status}, "duration_ms": {_fixed3(elapsed * 1000)}, "upstream": {upstream}, '
                f'"attempts": {ex.attempts}, "client": {_json(ex.client_ip)}, '
                f'"bytes_received": {received}, "bytes_sent": {ex.sent_bytes}, '
                f'"http_version": {_json(ex.version)}')
        if trace is not None:
            line += f', "trace_id": "{trace[0]}", "span_id": "{trace[1]}"'
        else:
            line += ', "trace_id": null, "span_id": null'
        if agent:
            line += f', "user_agent": {_json(agent[:_MAX_AGENT])}'
        if caller is not None:
            line += f', "auth": "{caller.method}"'
            for name, value in (("user", caller.user), ("tenant", caller.tenant), ("key_id", caller.key_id)):
                if value:
                    line += f', "{name}": {_json(value[:_MAX_NAME])}'
        return line + "}"

    def _text_line(self, ex: Exchange, status: int, elapsed: float, received: int) -> str:
        """The development format: `access GET /api/x 200 3.2ms svc=... ` (every free text escaped)."""
        trace = _trace_ids(ex)
        clock = time.strftime("%H:%M:%S")
        line = (f"{clock} access {text_value(ex.method)} {text_value(ex.path)} {status} "
                f"{elapsed * 1000:.1f}ms service={text_value(ex.service_label)} host={text_value(ex.host[:_MAX_HOST])} "
                f"client={text_value(ex.client_ip)} in={received}B out={ex.sent_bytes}B "
                f"request_id={text_value(ex.request_id)} http={text_value(ex.version)}")
        if ex.upstream:
            line += f" upstream={text_value(ex.upstream)} attempts={ex.attempts}"
        if trace is not None:
            line += f" trace_id={trace[0]} span_id={trace[1]}"
        caller = ex.caller
        if caller is not None:
            for name, value in (("user", caller.user), ("tenant", caller.tenant), ("key_id", caller.key_id)):
                if value:
                    line += f" {name}={text_value(value[:_MAX_NAME])}"
        agent = ex.lookup.get("user-agent")
        if agent:
            line += f" user_agent={text_value(agent[:_MAX_AGENT])}"
        return line


class AdminHandler(GatewayHandler):
    """The admin listener's pipeline: the gateway's own endpoints, all of them, and
    a 404 envelope for any other path (nothing is proxied). No host or CORS checks:
    it is reached by scrapers and operators on a private address."""

    def __init__(self, view: GatewayView, proxy: Proxy, access_log: AccessLog | None,
                 spans: SpanExporter | None = None) -> None:
        super().__init__(view, proxy, access_log, spans)
        self._endpoints = dict(ENDPOINTS)

    def _refused_early(self, ex: Exchange, out: UpgradableWriter) -> bool:
        return False

    async def _dispatch(self, ex: Exchange, out: UpgradableWriter) -> None:
        if "#" in ex.target:
            self._refuse(out, ex, 400, _FRAGMENT)
            return
        path = ex.path
        endpoint = self._endpoints.get(path)
        if endpoint is None:
            self._refuse(out, ex, 404, "Not a gateway endpoint")
            return
        self._serve_endpoint(ex, out, path, endpoint)


#: "000" to "999": the decimals `_fixed3` writes.
_DECIMALS = tuple(f"{n:03d}" for n in range(1000))


def _fixed3(value: float) -> str:
    """A non-negative `value` with three decimals (cut, not rounded), as `f"{value:.3f}"`
    would write it but without a format spec: mypyc compiles an f-string with one to a
    `str.format` call that parses the whole access-log template on every request."""
    thousandths = int(value * 1000)
    return f"{thousandths // 1000}.{_DECIMALS[thousandths % 1000]}"


def _trace_ids(ex: Exchange) -> tuple[str, str] | None:
    """(trace id, span id) for the access log: of the context sent upstream (valid by
    construction, so sliced), else of the client's `traceparent` when it is valid."""
    sent = ex.traceparent
    if sent is not None:
        return sent[3:35], sent[36:52]
    return ids(ex.lookup.get("traceparent"))


def _client_gone(ex: Exchange, out: UpgradableWriter) -> None:
    """Before any answer, a client that left is recorded as nginx's 499 (client closed
    request): a 4xx, so disconnects never read as gateway errors."""
    out.abort()
    if ex.status == 0:
        ex.status = 499
