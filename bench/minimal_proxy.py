"""The reference for `make bench`: the smallest useful aiohttp reverse proxy
(one ClientSession, forward and return, uvloop, nothing else)."""

from __future__ import annotations

import sys

import aiohttp
import uvloop
from aiohttp import web


def main() -> None:
    port, upstream = int(sys.argv[1]), sys.argv[2]

    async def session_ctx(app: web.Application) -> object:
        app["session"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        yield
        await app["session"].close()

    async def proxy(request: web.Request) -> web.Response:
        async with request.app["session"].request(request.method, upstream + request.path_qs,
                                                  data=await request.read()) as resp:
            return web.Response(status=resp.status, body=await resp.read(),
                                content_type=resp.content_type)

    app = web.Application()
    app.cleanup_ctx.append(session_ctx)  # type: ignore[arg-type]
    app.router.add_route("*", "/{tail:.*}", proxy)
    uvloop.install()
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main()
