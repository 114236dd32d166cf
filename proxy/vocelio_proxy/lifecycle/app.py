"""The proxy's composition root: builds the aiohttp application that holds
settings, state and clients under `AppKey`s (the only module that reads them:
the pipeline's parts are built here with what each one uses) and owns
every background task (config watch, health checks, pool sweeping, log
flushing) through `cleanup_ctx`, so all of them are cancelled on shutdown.
`start_gateway` starts the application and the HTTP server in front of it (and,
when `admin.port` is set, the admin listener for the gateway's own endpoints);
`serve` is the graceful-shutdown runner used by the CLI and standalone mode."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import redis.asyncio as redis
from aiohttp import web

from vocelio_contract.paths import PathPolicy
from vocelio_proxy import COMPILED
from vocelio_proxy.clock import Clock, SystemClock
from vocelio_proxy.lifecycle import appkeys as keys
from vocelio_proxy.lifecycle.healthchecks import run_health_checks
from vocelio_proxy.lifecycle.sources import ConfigSource, FileSource, watch_source
from vocelio_proxy.lifecycle.tls_listener import TlsListener, start_tls_listener
from vocelio_proxy.pipeline.edge import ApiKeyFile, EdgeGate, EdgePolicy
from vocelio_proxy.pipeline.endpoints import GatewayView
from vocelio_proxy.pipeline.handling import AdminHandler, GatewayHandler
from vocelio_proxy.pipeline.proxying import Proxy
from vocelio_proxy.policy.auth.jwks import JwksCache, JwksFetch, JwksUnavailable
from vocelio_proxy.policy.https_redirect import HttpsRedirect
from vocelio_proxy.policy.ratelimits import MemoryLimiter
from vocelio_proxy.process.accesslog import AccessLog
from vocelio_proxy.process.metrics import ProxyMetrics, code_label
from vocelio_proxy.process.redis_limiter import RedisLimiter
from vocelio_proxy.process.state import GatewayState
from vocelio_proxy.process.tracing import SpanExporter
from vocelio_proxy.settings import ProxySettings
from vocelio_proxy.wire.h2c_upstream import H2cLimits, H2cPool
from vocelio_proxy.wire.server import HttpServer
from vocelio_proxy.wire.upstream import UpstreamPool

log = logging.getLogger("vocelio.proxy")

#: Extra setup for an app (auth/rate-limit layer, standalone extras): a
#: cleanup-context-style async generator.
Extension = Callable[[web.Application], AsyncIterator[None]]


def create_app(settings: ProxySettings, source: ConfigSource | None = None, *,
               clock: Clock | None = None, extensions: list[Extension] | None = None) -> web.Application:
    clock = clock or SystemClock()
    app = web.Application()
    app[keys.SETTINGS] = settings
    app[keys.CLOCK] = clock
    state = GatewayState(clock=clock, started_at=clock.monotonic(),
                         path_policy=PathPolicy.from_settings(settings.paths))
    app[keys.STATE] = state
    app[keys.METRICS] = ProxyMetrics(lambda: state.runtime)
    if source is None and settings.config_path is not None:
        source = FileSource(settings.config_path)
    app[keys.ACCESS_LOG] = AccessLog()
    app.cleanup_ctx.append(_access_log)
    if settings.tracing.exporter == "otlp-http":
        app[keys.SPANS] = SpanExporter(settings.tracing, app[keys.METRICS])
        app.cleanup_ctx.append(lambda app: app[keys.SPANS].run())
    app.cleanup_ctx.append(_clients)
    app.cleanup_ctx.append(_background(source))
    app.cleanup_ctx.append(_edge)
    for extension in extensions or []:
        app.cleanup_ctx.append(extension)
    return app


async def _access_log(app: web.Application) -> AsyncIterator[None]:
    """The access log's periodic flush while the app runs, and a last flush at shutdown."""
    access_log = app[keys.ACCESS_LOG]
    task = asyncio.create_task(access_log.flush_forever(), name="access-log-flush")
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    access_log.flush()


async def _clients(app: web.Application) -> AsyncIterator[None]:
    app[keys.POOL] = UpstreamPool(app[keys.SETTINGS].upstream_idle_timeout_s)
    app[keys.H2C_POOL] = h2c_pool(app[keys.SETTINGS])
    yield
    app[keys.POOL].close()
    app[keys.H2C_POOL].close()


def h2c_pool(settings: ProxySettings) -> H2cPool:
    """The h2c client pool with the settings' bounds."""
    h2c = settings.h2c_upstream
    return H2cPool(H2cLimits(connections_per_endpoint=h2c.connections_per_endpoint,
                             streams_per_connection=h2c.streams_per_connection,
                             stream_window=h2c.stream_window_bytes, max_header_list_size=h2c.max_header_list_bytes,
                             idle_timeout_s=settings.upstream_idle_timeout_s))


def _background(source: ConfigSource | None) -> Extension:
    async def tasks(app: web.Application) -> AsyncIterator[None]:
        state = app[keys.STATE]
        settings = app[keys.SETTINGS]
        health_pool = UpstreamPool(idle_timeout_s=30.0)
        owned: list[asyncio.Task[None]] = []
        source_run = getattr(source, "run", None)
        if source_run is not None:
            owned.append(asyncio.create_task(source_run(), name="config-source"))
        if source is not None:
            owned.append(asyncio.create_task(
                watch_source(source, state, app[keys.METRICS], settings.config_poll_s), name="config-watch"))
        else:
            state.last_error = "no config source configured"
        health_h2c = h2c_pool(settings)
        owned.append(asyncio.create_task(run_health_checks(state, health_pool, health_h2c), name="health-checks"))
        owned.append(asyncio.create_task(_sweep(app[keys.POOL]), name="pool-sweep"))
        owned.append(asyncio.create_task(_sweep(app[keys.H2C_POOL]), name="h2c-pool-sweep"))
        yield
        for task in owned:
            task.cancel()
        await asyncio.gather(*owned, return_exceptions=True)
        health_pool.close()
        health_h2c.close()

    return tasks


def jwks_fetcher(session: aiohttp.ClientSession) -> JwksFetch:
    """The JWKS cache's fetcher over the app's HTTP client: a 3 s budget, any status
    but 2xx or a body that is not JSON is `JwksUnavailable`."""

    async def fetch(url: str) -> object:
        try:
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=3)) as resp:
                resp.raise_for_status()
                return await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise JwksUnavailable(str(exc)) from exc

    return fetch


async def _edge(app: web.Application) -> AsyncIterator[None]:
    """Builds the edge policy with its clients (HTTP for JWKS, Redis when configured)
    and closes them on shutdown."""
    settings = app[keys.SETTINGS]
    session = aiohttp.ClientSession()
    client = None
    limiter = None
    memory = MemoryLimiter(settings.rate_limit.max_tracked_callers)
    if settings.redis_url:
        timeout = settings.rate_limit.redis_timeout_s
        client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=timeout, socket_timeout=timeout,
                                      health_check_interval=0, max_connections=8,
                                      password=settings.redis_password)  # a URL's own password wins
        limiter = RedisLimiter(client, settings.rate_limit, app[keys.METRICS], memory, app[keys.CLOCK])
    jwks = JwksCache(jwks_fetcher(session), settings.auth.jwks_refresh_min_interval_s, app[keys.CLOCK])
    gate = EdgeGate(settings, app[keys.CLOCK], app[keys.METRICS], app[keys.STATE], jwks, limiter, memory,
                    ApiKeyFile(settings.api_keys_path))
    gate.key_file.refresh()
    policy: EdgePolicy = gate
    app[keys.EDGE_POLICY] = policy
    app[keys.EDGE_GATE] = gate
    yield
    await session.close()
    if limiter is not None:
        await limiter.close()
    if client is not None:
        await client.aclose()


def gateway_handler(app: web.Application, *, admin: bool = False, tls: bool = False) -> GatewayHandler:
    """A listener's pipeline (the admin listener's with `admin`, the TLS listener's with
    `tls`), built from the started application's parts."""
    settings = app[keys.SETTINGS]
    view = GatewayView(settings, app[keys.STATE], app[keys.CLOCK], app[keys.METRICS])
    spans = app.get(keys.SPANS)
    proxy = Proxy(settings, app[keys.STATE], app[keys.POOL], app[keys.METRICS], app[keys.CLOCK],
                  app.get(keys.EDGE_POLICY), spans, app.get(keys.H2C_POOL))
    access_log = app[keys.ACCESS_LOG] if settings.access_log else None
    handler = (AdminHandler if admin else GatewayHandler)(view, proxy, access_log, spans)
    redirect = settings.tls.redirect
    if settings.tls.hsts.enabled:
        handler.hsts = settings.tls.hsts.header()
    if tls:
        proxy.scheme = "https"
        handler.tls = True
    elif not admin and redirect.enabled:
        handler.https_redirect = HttpsRedirect(redirect.port, redirect.exempt_paths)
    return handler


async def _sweep(pool: UpstreamPool | H2cPool) -> None:
    while True:
        await asyncio.sleep(5.0)
        pool.sweep()


class RunningGateway:
    """A started application with its HTTP server (and admin listener, if any);
    `stop` drains and cleans up."""

    def __init__(self, app: web.Application, server: HttpServer, port: int,
                 admin_server: HttpServer | None = None, admin_port: int | None = None,
                 tls: TlsListener | None = None) -> None:
        self.app = app
        self.server = server
        self.port = port
        self.admin_server = admin_server
        #: The admin listener's port (None when it is off).
        self.admin_port = admin_port
        #: The TLS listener (None when `tls.enabled` is off); its port is `tls.port`.
        self.tls = tls
        self.tls_port = tls.port if tls is not None else None

    async def stop(self, drain_timeout_s: float) -> None:
        self.app[keys.STATE].draining = True
        try:
            # The TLS listener drains at the same time as the others (one drain deadline in all).
            tls_stopped = asyncio.ensure_future(self.tls.stop(drain_timeout_s)) if self.tls is not None else None
            try:
                if self.admin_server is not None:
                    await asyncio.gather(self.server.shutdown(drain_timeout_s),
                                         self.admin_server.shutdown(drain_timeout_s))
                else:
                    await self.server.shutdown(drain_timeout_s)
            finally:
                if tls_stopped is not None:
                    await tls_stopped
        finally:
            await self.app.cleanup()


def _http_server(app: web.Application, handler: GatewayHandler) -> HttpServer:
    settings = app[keys.SETTINGS]
    metrics = app[keys.METRICS]
    return HttpServer(
        handler, settings.limits, header_timeout_s=settings.client_header_timeout_s,
        idle_timeout_s=settings.client_idle_timeout_s,
        on_reject=lambda status: metrics.count_request("gateway", "OTHER", code_label(status), 0.0),
        http2=settings.http2)


async def start_gateway(app: web.Application, host: str, port: int, *, reuse_port: bool = False) -> RunningGateway:
    """Run the application's startup (clients, background tasks) and listen (`reuse_port`:
    share the public port with the other workers of a pod, lifecycle.supervisor)."""
    app.on_startup.freeze()
    await app.startup()
    app.freeze()
    settings = app[keys.SETTINGS]
    server = _http_server(app, gateway_handler(app))
    admin: HttpServer | None = None
    admin_port: int | None = None
    tls: TlsListener | None = None
    try:
        bound = await server.listen(host, port, reuse_port=reuse_port)
        if settings.admin.port is not None:
            admin = _http_server(app, gateway_handler(app, admin=True))
            admin_port = await admin.listen(settings.admin.host, settings.admin.port)
        if settings.tls.enabled:
            tls = await start_tls_listener(settings, _http_server(app, gateway_handler(app, tls=True)),
                                           app[keys.METRICS].registry, settings.tls.host or host,
                                           watchers=app[keys.STATE].watchers)
            app[keys.STATE].tls_status = tls.store.status
    except BaseException:
        await server.shutdown(0)
        if admin is not None:
            await admin.shutdown(0)
        await app.cleanup()
        raise
    return RunningGateway(app, server, bound, admin, admin_port, tls)


async def serve(app: web.Application, settings: ProxySettings,
                started: Callable[[int], Awaitable[None] | None] | None = None,
                stop: asyncio.Event | None = None, *, reuse_port: bool = False,
                listening: Callable[[RunningGateway], None] | None = None) -> None:
    """Serve until SIGTERM/SIGINT (or `stop`), then drain: readiness goes false,
    after `shutdown_delay_s` the listener closes, in-flight requests get
    `drain_timeout_s` to finish. A worker of a pod (`lifecycle.worker`) shares the
    port (`reuse_port`) and reports its listeners to the supervisor (`listening`)."""
    gateway = await start_gateway(app, settings.host, settings.port, reuse_port=reuse_port)
    # Startup objects never die: keep them out of every later GC pass. A proxy allocates
    # many short-lived containers per request; collecting every 700 allocations cost
    # 10-15% of CPU per request in `bench/cpu_per_request.py`. Reference counting still
    # frees almost everything at once; cycles wait for the larger generation-0 budget.
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
    log.info("listening", extra={"fields": {"host": settings.host, "port": gateway.port}})
    log.info(COMPILED.line(), extra={"fields": {"compiled": COMPILED.label, "modules": len(COMPILED.modules)}})
    if gateway.admin_port is not None:
        log.info("admin listening", extra={"fields": {"host": settings.admin.host, "port": gateway.admin_port}})
    if gateway.tls_port is not None:
        log.info("tls listening", extra={"fields": {"host": settings.tls.host or settings.host,
                                                    "port": gateway.tls_port}})
    if started is not None:
        result = started(gateway.port)
        if result is not None:
            await result
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    if listening is not None:  # after the handlers: a SIGTERM from then on drains
        listening(gateway)
    await stop.wait()
    app[keys.STATE].draining = True
    log.info("draining", extra={"fields": {"delay_s": settings.shutdown_delay_s,
                                           "drain_timeout_s": settings.drain_timeout_s}})
    if settings.shutdown_delay_s:
        # Give load balancers time to observe /readyz failing before the listener closes.
        await asyncio.sleep(settings.shutdown_delay_s)
    await gateway.stop(settings.drain_timeout_s)
    log.info("stopped")
