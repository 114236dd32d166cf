"""Demo backends for the quickstart: one small aiohttp server per example
service on loopback, answering `/health` and echoing every other request
(service name, path, and the identity headers the gateway forwarded). Started
by `vocelio-gateway standalone --demo-backends`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

from vocelio_operator.local.files import LoadedResources


def demo_app(service: str) -> web.Application:
    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "healthy", "service": service})

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        forwarded = {k: v for k, v in request.headers.items()
                     if k.lower().startswith(("x-vocelio-", "x-forwarded-", "x-request-id", "traceparent"))}
        return web.json_response({"service": service, "method": request.method, "path": request.path_qs,
                                  "body_bytes": len(body), "forwarded": forwarded})

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


@asynccontextmanager
async def run_demo_backends(resources: LoadedResources) -> AsyncIterator[list[tuple[str, int]]]:
    """Serve every static loopback endpoint that the example resources name."""
    runners: list[web.AppRunner] = []
    started: list[tuple[str, int]] = []
    try:
        for res in resources.services:
            for backend in res.spec.backends:
                for ep in backend.static_endpoints or []:
                    if not ep.address.startswith("127."):
                        continue
                    runner = web.AppRunner(demo_app(res.metadata.name), access_log=None)
                    await runner.setup()
                    await web.TCPSite(runner, ep.address, ep.port).start()
                    runners.append(runner)
                    started.append((ep.address, ep.port))
        yield started
    finally:
        for runner in runners:
            await runner.cleanup()
