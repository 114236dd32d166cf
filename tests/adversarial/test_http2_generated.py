"""Generated HTTP/2 frame sequences (hypothesis) against one running gateway:
valid and invalid requests, bodies, resets, settings, pings, window updates,
priorities, stray CONTINUATIONs, GOAWAYs and junk, in any order. Whatever
arrives, the gateway never crashes, every stream ends (the in-flight gauge
returns to its baseline while the connection is still open), nothing leaks,
and it still serves."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    PingFrame,
    PriorityFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.harness.app_fixtures import GatewayFactory, UpstreamFactory, poll, service
from tests.harness.h2_tools import H2Client, RawH2
from tests.harness.hostile import resources, settled
from vocelio_contract.config import GatewayConfig
from vocelio_proxy.lifecycle import appkeys as keys
from vocelio_proxy.settings import Http2Settings, LimitSettings

STREAM = st.integers(0, 9).map(lambda n: 2 * n + 1)  # client stream ids 1..19 (and reuse of them)
PATH = st.sampled_from(["/api/ok", "/api/echo", "/health", "/nowhere", "/api/big"])
HEADER = st.tuples(st.sampled_from(["x-a", "X-Up", "connection", "te", ":status", "content-length", "cookie",
                                    "host"]),
                   st.sampled_from(["1", "trailers", "gzip", "", "a\r\nb", "gw.test", "5"]))


@st.composite
def frames(draw: st.DrawFn) -> tuple[str, Any]:
    kind = draw(st.sampled_from(["headers", "headers", "headers", "data", "rst", "settings", "ping", "window",
                                 "priority", "continuation", "goaway", "junk"]))
    sid = draw(STREAM)
    if kind == "headers":
        return kind, (sid, draw(PATH), draw(st.booleans()), draw(st.sampled_from(["GET", "POST", "HEAD"])),
                      draw(st.lists(HEADER, max_size=3)), draw(st.booleans()))
    if kind == "data":
        return kind, DataFrame(sid, data=b"d" * draw(st.integers(0, 20000)),
                               flags=["END_STREAM"] if draw(st.booleans()) else [])
    if kind == "rst":
        return kind, RstStreamFrame(sid, error_code=draw(st.integers(0, 13)))
    if kind == "settings":
        return kind, SettingsFrame(0, settings={draw(st.sampled_from([1, 3, 4, 5, 6])): draw(st.integers(0, 1 << 20))})
    if kind == "ping":
        return kind, PingFrame(0, opaque_data=b"fuzzfuzz")
    if kind == "window":
        return kind, WindowUpdateFrame(draw(st.sampled_from([0, sid])), window_increment=draw(st.integers(1, 1 << 20)))
    if kind == "priority":
        return kind, PriorityFrame(sid, depends_on=draw(STREAM), stream_weight=draw(st.integers(0, 255)))
    if kind == "continuation":
        return kind, ContinuationFrame(sid, data=b"\x00" * draw(st.integers(0, 100)))
    if kind == "goaway":
        return kind, GoAwayFrame(0, last_stream_id=0, error_code=0)
    return kind, draw(st.binary(min_size=1, max_size=40))


@pytest.fixture
def shared() -> dict[str, Any]:
    """One gateway for all the examples."""
    return {}


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Errors logged by the event loop about the HTTP/2 code (an exception in a callback
    or a task: a crash of the connection's code) or by the gateway (an unhandled error in
    the pipeline). Other tests' leftovers that the garbage collector reports meanwhile are
    not this test's concern."""
    found = []
    for r in caplog.records:
        text = f"{r.name}: {r.getMessage()}"
        if r.levelno < logging.ERROR:
            continue
        if r.name.startswith("vocelio") or (r.name == "asyncio" and ("http2" in text.lower() or "h2" in text)):
            found.append(text)
    return found


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sequence=st.lists(frames(), min_size=1, max_size=25))
async def test_generated_frame_sequences_never_crash_leak_or_leave_a_stream_open(
        gateway_factory: GatewayFactory, upstream_factory: UpstreamFactory, shared: dict[str, Any],
        caplog: pytest.LogCaptureFixture, sequence: list[tuple[str, Any]]) -> None:
    if not shared:
        up = await upstream_factory()
        svc = service("svc", up.endpoint(), prefixes=["/api"], rewrite=None)
        gw = await gateway_factory(GatewayConfig(services=[svc]),
                                   http2=Http2Settings(cleartext=True, max_concurrent_streams=8),
                                   limits=LimitSettings(client_body_timeout_s=0.5, client_send_timeout_s=1.0,
                                                        lingering_time_s=1.0))
        shared.update(gw=gw, before=resources(gw.app))
    gw = shared["gw"]
    baseline = shared["before"].in_flight
    raw = await RawH2.open(gw.port)
    try:
        for kind, value in sequence:
            if kind == "headers":
                sid, path, end, method, extra, end_headers = value
                frame = raw.headers(sid, path, end=end, method=method, extra=extra)
                if not end_headers:
                    frame.flags.discard("END_HEADERS")
                raw.send(frame)
            elif isinstance(value, Frame):
                raw.send(value)
            else:
                raw.writer.write(value)
        raw.send(PingFrame(0, opaque_data=b"barrier!"))
        await raw.drain()
        # Every stream ends by itself (answers, resets, timeouts), the connection still open or not.
        await poll(lambda: gw.app[keys.METRICS].in_flight_count == baseline, "every stream ended", deadline_s=10)
    finally:
        raw.close()
    assert _errors(caplog) == []


async def test_after_the_generated_sequences_nothing_leaked_and_the_gateway_serves(
        gateway_factory: GatewayFactory, upstream_factory: UpstreamFactory, caplog: pytest.LogCaptureFixture) -> None:
    """The same gateway settings as above, a burst of the nastiest sequences in parallel, then the counts."""
    up = await upstream_factory()
    svc = service("svc", up.endpoint(), prefixes=["/api"], rewrite=None)
    gw = await gateway_factory(GatewayConfig(services=[svc]),
                               http2=Http2Settings(cleartext=True, max_concurrent_streams=8),
                               limits=LimitSettings(client_body_timeout_s=0.5, client_send_timeout_s=1.0,
                                                    lingering_time_s=1.0))
    before = resources(gw.app)

    async def nasty(n: int) -> None:
        raw = await RawH2.open(gw.port)
        for sid in range(1, 41, 2):
            raw.send(raw.headers(sid, "/api/big" if sid % 3 else "/api/ok", end=sid % 4 == 1, method="POST"))
            if sid % 5 == 0:
                raw.send(RstStreamFrame(sid, error_code=8))
        raw.send(DataFrame(3, data=b"x" * 1000))
        await raw.drain()
        if n % 2:
            raw.close()  # leaves at once
        else:
            await poll(lambda: True, "tick")
            raw.close()

    await asyncio.gather(*(nasty(n) for n in range(10)))
    await settled(gw.app, before, deadline_s=10)
    assert _errors(caplog) == []
    client = await H2Client.open(gw.port)
    try:
        assert (await client.request("/api/ok")).status == 200
    finally:
        await client.close()
