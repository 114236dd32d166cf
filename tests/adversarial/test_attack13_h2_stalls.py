"""Red team, issue 13: a client that never opens its flow-control window must not
hold a stream (and the connection, its buffers and the concurrency slot) for ever,
whichever way the gateway wrote the answer: a proxied response that the pipeline
streamed (`start`/`write`/`drain`), or a whole answer handed over at once
(`send`: the gateway's own envelopes, 404s, refusals), whose handler returned
without ever waiting on `drain`. Every such stream is reset once the client has
taken nothing for `client_send_timeout_s`."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web
from hyperframe.frame import RstStreamFrame, SettingsFrame

from tests.harness.app_fixtures import GatewayFactory, UpstreamFactory, service
from tests.harness.h2_tools import PREFACE, RawH2
from tests.harness.hostile import resources, settled
from vocelio_contract.config import GatewayConfig
from vocelio_proxy.settings import Http2Settings, LimitSettings

CANCEL = 8


async def _small(request: web.Request) -> web.Response:
    return web.Response(text="small answer")


@pytest.mark.parametrize("path", ["/nowhere", "/api/small"], ids=["gateway-envelope", "proxied-answer"])
async def test_an_answer_the_client_never_lets_out_is_reset_by_the_send_timeout(
        gateway_factory: GatewayFactory, upstream_factory: UpstreamFactory, path: str) -> None:
    up = await upstream_factory(_small)
    svc = service("svc", up.endpoint(), prefixes=["/api"], rewrite=None)
    gw = await gateway_factory(GatewayConfig(services=[svc]), http2=Http2Settings(cleartext=True),
                               limits=LimitSettings(client_send_timeout_s=1.0))
    before = resources(gw.app)
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    raw = RawH2(reader, writer)
    writer.write(PREFACE + SettingsFrame(0, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 0}).serialize())
    raw.send(*(raw.headers(sid, path) for sid in (1, 3, 5)))
    await raw.drain()
    frames = await raw.read_until(
        lambda fs: {f.stream_id for f in fs if isinstance(f, RstStreamFrame)} >= {1, 3, 5}, deadline_s=10)
    resets = [f for f in frames if isinstance(f, RstStreamFrame)]
    assert {f.error_code for f in resets} == {CANCEL}
    await settled(gw.app, before, fd_slack=8)
    raw.close()
