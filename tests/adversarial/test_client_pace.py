"""The client's pace is never a verdict about the upstream (issue #10 item 1, the
class the attacker found with slow uploads): a client that uploads slowly, or
reads its answer slowly, must not open the breaker of a healthy service, eject a
healthy endpoint, or hold a half-open probe slot, and the upstream keeps all of
its deadline for its own part. And the other way round: an upstream that fails
on its own time is still judged (the guard is not a blanket pardon).

Real sockets throughout: trickled uploads (Content-Length, chunked, with
`Expect: 100-continue`, short and past the 64 KiB read-ahead), a client with a
tiny receive buffer that stops reading, upstreams that hang, answer late, reset
when held back (a send timeout) or reset on their own."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.harness.app_fixtures import Gateway, GatewayFactory, poll, service
from tests.harness.breakers_tools import Switch, breaker_of, probe_slots, trip_to_half_open
from tests.harness.client_pace_tools import ejections, giving_up_upstream, slow_reader, trickle
from tests.harness.hostile import Received, RecordingUpstreamFactory, resources, settled, status_of
from vocelio_contract.config import Endpoint, GatewayConfig
from vocelio_proxy.policy.breakers import BreakerState

DEADLINE_S = 0.5
#: More than the proxy reads ahead before it involves an upstream.
PAST_READ_AHEAD = 70_000


def envelope(answer: bytes) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(answer.partition(b"\r\n\r\n")[2])
    return body


async def gateway(gateway_factory: GatewayFactory, endpoint: Endpoint, *, failures: int = 3, open_s: float = 30,
                  ejecting: bool = True, **kw: Any) -> Gateway:
    """Breaker and passive health (when `ejecting`) trip after `failures` failures in a row."""
    kw.setdefault("timeouts", {"request_s": DEADLINE_S, "connect_s": 0.3})
    return await gateway_factory(GatewayConfig(services=[service(
        "svc", endpoint, health_check={"enabled": False}, retry={"attempts": 1},
        circuit_breaker={"consecutive_failures": failures, "open_s": open_s, "half_open_max_probes": 1},
        passive_health={"consecutive_failures": failures if ejecting else 1000, "base_ejection_s": 30}, **kw)]))


def final(answer: bytes) -> bytes:
    """The final answer, after any interim 100 Continue."""
    return answer.removeprefix(b"HTTP/1.1 100 Continue\r\n\r\n")


def healthy(gw: Gateway) -> None:
    assert breaker_of(gw).state is BreakerState.CLOSED
    assert ejections(gw) == [0]


def upload_head(method: bytes, framing: bytes) -> bytes:
    return method + b" /api/v1/svc/up HTTP/1.1\r\nHost: t\r\nConnection: close\r\n" + framing + b"\r\n\r\n"


CHUNKED = b"Transfer-Encoding: chunked"
UPLOADS = {
    "content-length": (upload_head(b"POST", b"Content-Length: 4"), [b"a"] * 4),
    "chunked": (upload_head(b"PUT", CHUNKED), [b"1\r\na\r\n"] * 3 + [b"0\r\n\r\n"]),
    "100-continue": (upload_head(b"POST", b"Expect: 100-continue\r\nContent-Length: 4"), [b"a"] * 4),
    "past the read-ahead": (upload_head(b"POST", b"Content-Length: %d" % (PAST_READ_AHEAD + 4))
                            + b"a" * PAST_READ_AHEAD, [b"a"] * 4),
    "chunked past the read-ahead": (upload_head(b"PUT", CHUNKED) + b"%x\r\n%s\r\n" % (PAST_READ_AHEAD,
                                                                                     b"a" * PAST_READ_AHEAD),
                                    [b"1\r\na\r\n"] * 3 + [b"0\r\n\r\n"]),
}


@pytest.mark.parametrize("upload", UPLOADS.values(), ids=UPLOADS.keys())
async def test_uploads_that_arrive_after_the_deadline_are_the_clients_408_and_never_a_verdict(
        recording_upstream: RecordingUpstreamFactory, gateway_factory: GatewayFactory,
        upload: tuple[bytes, list[bytes]]) -> None:
    up = await recording_upstream()
    gw = await gateway(gateway_factory, up.endpoint())
    before = resources(gw.app)
    head, pieces = upload
    every = 2 * DEADLINE_S / len(pieces)  # never stalled, always finished past the deadline
    answers = await asyncio.gather(*(trickle(gw.port, head, pieces, every) for _ in range(4)))
    for answer in answers:
        assert status_of(final(answer)) == 408, answer[:200]
        assert envelope(final(answer))["message"] == "The request body did not arrive in time"
    healthy(gw)
    assert (await gw.get("/api/v1/svc/after"))[0] == 200
    await settled(gw.app, before)


async def test_a_small_upload_never_reaches_the_upstream_before_it_is_whole(
        recording_upstream: RecordingUpstreamFactory, gateway_factory: GatewayFactory) -> None:
    up = await recording_upstream()
    gw = await gateway(gateway_factory, up.endpoint())
    head, pieces = UPLOADS["content-length"]
    await trickle(gw.port, head, pieces, DEADLINE_S / 2)
    assert up.connections == 0
    assert up.requests == []


async def test_an_upload_finishing_just_before_the_deadline_leaves_the_upstream_all_of_its_time(
        recording_upstream: RecordingUpstreamFactory, gateway_factory: GatewayFactory) -> None:
    deadline_s = 1.0

    async def thinks(req: Received) -> tuple[int, list[tuple[str, str]], bytes]:
        await asyncio.sleep(0.6 * deadline_s)
        return 200, [("Content-Type", "text/plain")], b"ok"

    up = await recording_upstream(thinks)
    gw = await gateway(gateway_factory, up.endpoint(), timeouts={"request_s": deadline_s, "connect_s": 0.3})
    head, pieces = UPLOADS["content-length"]
    # The body is whole at 0.6 of the deadline; the upstream then needs 0.6 of it.
    answer = await trickle(gw.port, head, pieces, 0.6 * deadline_s / len(pieces))
    assert status_of(answer) == 200, answer[:200]
    assert up.requests[0].body == b"aaaa"
    healthy(gw)


async def test_slow_uploads_never_take_the_half_open_probe_slot(recording_upstream: RecordingUpstreamFactory,
                                                                gateway_factory: GatewayFactory) -> None:
    switch = Switch()
    up = await recording_upstream(switch)
    gw = await gateway(gateway_factory, up.endpoint(), failures=1, open_s=0.3, ejecting=False,
                       timeouts={"request_s": 2.0, "connect_s": 0.3})
    before = resources(gw.app)
    await trip_to_half_open(gw)
    head, pieces = UPLOADS["content-length"]
    # Still being read for 2 s (then 408): time enough to look at the breaker meanwhile.
    uploads = [asyncio.create_task(trickle(gw.port, head, pieces, 1.0)) for _ in range(3)]
    await poll(lambda: resources(gw.app).in_flight == 3, "the slow uploads are being read")
    assert probe_slots(gw.app) == 0
    assert (await gw.get("/api/v1/svc/after"))[0] == 200  # the probe is free for a real request
    assert breaker_of(gw).state is BreakerState.CLOSED
    for answer in await asyncio.gather(*uploads):
        assert status_of(final(answer)) == 408
    await settled(gw.app, before)


async def test_a_streamed_upload_whose_client_is_too_slow_releases_its_probe_without_verdict(
        recording_upstream: RecordingUpstreamFactory, gateway_factory: GatewayFactory) -> None:
    up = await recording_upstream(Switch())
    gw = await gateway(gateway_factory, up.endpoint(), failures=1, open_s=0.3, ejecting=False)
    await trip_to_half_open(gw)
    head, pieces = UPLOADS["past the read-ahead"]
    answer = await trickle(gw.port, head, pieces, 2 * DEADLINE_S / 4)
    assert status_of(answer) == 408
    assert breaker_of(gw).state is BreakerState.HALF_OPEN  # released: neither verdict
    assert probe_slots(gw.app) == 0
    assert (await gw.get("/api/v1/svc/after"))[0] == 200
    assert breaker_of(gw).state is BreakerState.CLOSED


async def test_a_paced_upload_to_an_upstream_that_never_answers_is_a_504_without_verdict(
        recording_upstream: RecordingUpstreamFactory, gateway_factory: GatewayFactory) -> None:
    switch = Switch(mode="hang")
    up = await recording_upstream(switch)
    gw = await gateway(gateway_factory, up.endpoint(), failures=1)
    head, _ = UPLOADS["past the read-ahead"]
    # The rest of the body comes at 0.4 of the deadline: the client's pace shared the attempt.
    answer = await trickle(gw.port, head, [b"aaaa"], 0.4 * DEADLINE_S)
    assert status_of(answer) == 504
    healthy(gw)
    switch.released.set()


# -- the guard is not a pardon: an upstream failing on its own time is judged ----------

async def test_whole_uploads_to_an_upstream_that_never_answers_still_open_the_breaker(
        recording_upstream: RecordingUpstreamFactory, gateway_factory: GatewayFactory) -> None:
    switch = Switch(mode="hang")
    up = await recording_upstream(switch)
    gw = await gateway(gateway_factory, up.endpoint())
    for size in (10, 1000, 60_000):  # each body arrives at once
        status, _, _ = await gw.request("POST", "/api/v1/svc/up", data=b"x" * size)
        assert status == 504
    assert breaker_of(gw).state is BreakerState.OPEN
    assert ejections(gw) == [1]
    switch.released.set()


async def test_failing_answers_to_uploads_still_count(recording_upstream: RecordingUpstreamFactory,
                                                      gateway_factory: GatewayFactory) -> None:
    up = await recording_upstream(Switch(mode="fail"))
    gw = await gateway(gateway_factory, up.endpoint())
    head, pieces = UPLOADS["content-length"]
    for _ in range(3):  # slow, but in time: the 500 is the upstream's own answer
        assert status_of(await trickle(gw.port, head, pieces, 0.1 * DEADLINE_S)) == 500
    assert breaker_of(gw).state is BreakerState.OPEN


# -- slow readers -------------------------------------------------------------------------

GET = b"GET /api/v1/svc/big HTTP/1.1\r\nHost: t\r\n\r\n"


async def test_a_client_that_reads_slowly_never_makes_the_upstreams_send_timeout_a_verdict(
        gateway_factory: GatewayFactory) -> None:
    async with giving_up_upstream(give_up_s=0.3) as up:
        gw = await gateway(gateway_factory, Endpoint(address="127.0.0.1", port=up.port),
                           timeouts={"request_s": 5, "connect_s": 1, "idle_s": 5})
        before = resources(gw.app)
        for _ in range(3):
            read = await slow_reader(gw.port, GET, pause_s=1.0)
            assert read > 0  # the head and what was buffered, then the cut
        assert up.gave_up == 3
        healthy(gw)
        await settled(gw.app, before)


async def test_an_upstream_that_cuts_its_stream_on_its_own_is_still_judged(gateway_factory: GatewayFactory) -> None:
    async with giving_up_upstream(cut_after=100_000) as up:
        gw = await gateway(gateway_factory, Endpoint(address="127.0.0.1", port=up.port),
                           timeouts={"request_s": 5, "connect_s": 1, "idle_s": 5})
        for _ in range(3):
            await slow_reader(gw.port, GET, pause_s=0.0, rcvbuf=1 << 20)
        assert up.cut == 3
        assert breaker_of(gw).state is BreakerState.OPEN
        assert ejections(gw) == [1]
