"""A pooled upstream connection only ever carries the answer to its own request
(docs/security/wire.md, "Upstream answers"): odd upstream answers, the bytes
their heads announce written late (once the next request is on the same
connection, or a moment later), and the answers clients get afterwards.

The raw upstream tags every answer with the path it answers; a client that
gets a tag other than its own got somebody else's answer."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.harness.app_fixtures import Gateway, GatewayFactory
from tests.harness.hostile import raw_request, resources, settled
from tests.harness.upstream_answer_tools import (
    OddAnswer,
    ScriptedUpstream,
    plain_config,
    scripted_upstream,
    tag_of,
    tagged,
)
from tests.harness.wire_tools import responses_in

_ids = itertools.count()


async def _get(port: int, path: bytes, method: bytes = b"GET") -> list[tuple[int, dict[str, str], bytes]]:
    answer = await raw_request(port, method + b" /api/v1/svc" + path + b" HTTP/1.1\r\nHost: a\r\n"
                               b"Connection: close\r\n\r\n")
    return responses_in(answer, head_requests=1 if method == b"HEAD" else 0)


async def _assert_own_answers(port: int, up: ScriptedUpstream, count: int = 2) -> None:
    """Fresh clients, one after another, each get the upstream's answer to their own request."""
    for _ in range(count):
        path = b"/n/%d" % next(_ids)
        got = await _get(port, path)
        assert [(status, tag_of(body)) for status, _, body in got] == [(200, path)], got


# -- heads that announce bytes a no-body answer must not carry -------------------------------

def _late(path: bytes) -> bytes:
    """Late bytes that look like an answer (to the odd request itself)."""
    return tagged(path)


ANNOUNCING = {
    "204 with Content-Length": (b"GET", b"HTTP/1.1 204 No Content\r\nContent-Length: %d\r\n\r\n", 204),
    "204 with Transfer-Encoding": (b"GET", b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n", 204),
    "304 with Content-Length": (b"GET", b"HTTP/1.1 304 Not Modified\r\nContent-Length: %d\r\n\r\n", 304),
    "304 with Transfer-Encoding": (b"GET", b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n", 304),
    "HEAD answered with Content-Length": (b"HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", 200),
    "HEAD answered chunked": (b"HEAD", b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n", 404),
}


@pytest.mark.parametrize("when", ["next", "later"])
@pytest.mark.parametrize(("method", "head", "status"), ANNOUNCING.values(), ids=ANNOUNCING.keys())
async def test_bytes_a_no_body_answer_announced_never_become_another_clients_answer(
        gateway_factory: GatewayFactory, method: bytes, head: bytes, status: int, when: str) -> None:
    async with scripted_upstream() as up:
        gw = await gateway_factory(plain_config(up.port))
        path = b"/odd/%d" % next(_ids)
        late = _late(path)
        up.script[path] = OddAnswer(head.replace(b"%d", b"%d" % len(late)), late, when)
        first = await _get(gw.port, path, method)
        assert [s for s, _, _ in first] == [status], first
        await _assert_own_answers(gw.port, up)
        # The connection that carried the announcing answer was never used again.
        odd_conn = up.connection_of(path)
        assert [p for conn, _, p in up.seen if conn == odd_conn] == [path]


def test_the_attack2_heads_are_among_the_announcing_ones() -> None:
    # The class, not the example: the attacker's two heads are rows of the table above.
    heads = {head for _, head, _ in ANNOUNCING.values()}
    assert b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n" in heads
    assert b"HTTP/1.1 204 No Content\r\nContent-Length: %d\r\n\r\n" in heads


INTERIM_WITH_A_BODY = {
    # llhttp reads the body of a 1xx above 103 that declares one: it would join the final answer.
    "150 with Content-Length": b"HTTP/1.1 150 Odd\r\nContent-Length: 5\r\n\r\nEVIL!",
    "100 with Content-Length": b"HTTP/1.1 100 Continue\r\nContent-Length: 5\r\n\r\nEVIL!",
    "103 chunked": b"HTTP/1.1 103 Early Hints\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nEVIL!\r\n0\r\n\r\n",
}


@pytest.mark.parametrize("interim", INTERIM_WITH_A_BODY.values(), ids=INTERIM_WITH_A_BODY.keys())
async def test_an_interim_answer_that_announces_a_body_is_a_502_and_its_bytes_go_nowhere(
        gateway_factory: GatewayFactory, interim: bytes) -> None:
    async with scripted_upstream() as up:
        gw = await gateway_factory(plain_config(up.port))
        path = b"/odd/%d" % next(_ids)
        up.script[path] = OddAnswer(interim + tagged(path))
        first = await _get(gw.port, path)
        assert [s for s, _, _ in first] == [502], first
        assert b"EVIL" not in first[0][2]
        await _assert_own_answers(gw.port, up)


async def test_a_plain_204_and_304_keep_the_connection_in_the_pool(gateway_factory: GatewayFactory) -> None:
    # The common path: no-body answers that announce nothing (or a length of 0) are reused.
    async with scripted_upstream() as up:
        gw = await gateway_factory(plain_config(up.port))
        paths = []
        for head in (b"HTTP/1.1 204 No Content\r\n\r\n", b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
                     b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n"):
            path = b"/odd/%d" % next(_ids)
            up.script[path] = OddAnswer(head)
            paths.append(path)
            assert [s for s, _, _ in await _get(gw.port, path)] == [int(head[9:12])]
        await _assert_own_answers(gw.port, up, count=1)
        assert len({conn for conn, _, _ in up.seen}) == 1, up.seen


# -- generated: sequences of odd answers, then normal requests ------------------------------

# (method, status line) of a no-body answer, or of an interim one followed by a final answer.
_NO_BODY = [(b"GET", b"HTTP/1.1 204 No Content"), (b"GET", b"HTTP/1.1 304 Not Modified"),
            (b"HEAD", b"HTTP/1.1 200 OK"), (b"HEAD", b"HTTP/1.1 404 Not Found"), (b"HEAD", b"HTTP/1.1 204 No Content")]
_INTERIM = [b"HTTP/1.1 100 Continue", b"HTTP/1.1 103 Early Hints", b"HTTP/1.1 150 Odd"]
_FRAMINGS = {"none": b"", "zero": b"Content-Length: 0\r\n", "length": b"Content-Length: %d\r\n",
             "chunked": b"Transfer-Encoding: chunked\r\n",
             "both": b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
             "twice": b"Content-Length: 0\r\nContent-Length: 0\r\n"}
_ANNOUNCING = {"length", "chunked"}


@st.composite
def odd_answers(draw: st.DrawFn) -> tuple[bytes, bytes, OddAnswer, set[int]]:
    """(method, a fresh path, its answer, statuses the odd request's client may get)."""
    framing = draw(st.sampled_from(sorted(_FRAMINGS)))
    interim = draw(st.booleans())
    if interim:
        method, line = b"GET", draw(st.sampled_from(_INTERIM))
    else:
        method, line = draw(st.sampled_from(_NO_BODY))
    announces = framing in _ANNOUNCING
    # Late bytes the head announced may come any time; bytes it did not announce are only
    # caught when they come with the head (after a complete answer) or while the
    # connection is idle in the pool, so they are sent with the head here.
    when = draw(st.sampled_from(["never", "with", "next", "later"] if announces else ["never", "with"]))
    path = b"/odd/%d" % next(_ids)
    return method, path, _build(path, line, framing, interim, when), _statuses(line, framing, interim)


def _build(path: bytes, line: bytes, framing: str, interim: bool, when: str) -> OddAnswer:
    late = tagged(path)
    head = line + b"\r\n" + _FRAMINGS[framing].replace(b"%d", b"%d" % len(late)) + b"\r\n"
    if interim:
        head += tagged(path)  # the final answer after the interim one
    return OddAnswer(head + late if when == "with" else head, late if when in ("next", "later") else b"",
                     "never" if when == "with" else when)


def _statuses(line: bytes, framing: str, interim: bool) -> set[int]:
    if framing in ("both", "twice"):
        return {502}
    if interim:
        return {502} if framing in _ANNOUNCING else {200}
    return {int(line[9:12])}


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(sequence=st.lists(odd_answers(), min_size=1, max_size=3))
async def test_generated_odd_answers_never_hand_a_later_client_another_answer(
        pooled: tuple[Gateway, ScriptedUpstream], sequence: list[tuple[bytes, bytes, OddAnswer, set[int]]]) -> None:
    gw, up = pooled
    for method, path, answer, statuses in sequence:
        up.script[path] = answer
        got = await _get(gw.port, path, method)
        assert len(got) == 1, (answer, got)
        assert got[0][0] in statuses, (answer, got)
        body = got[0][2]
        # Whatever the odd request got, it is never another request's answer.
        assert tag_of(body) in (None, path), (answer, got)
        # And the next client gets its own (on whichever connection the gateway chose).
        await _assert_own_answers(gw.port, up, count=1)


@pytest.fixture
async def pooled(gateway_factory: GatewayFactory) -> AsyncIterator[tuple[Gateway, ScriptedUpstream]]:
    async with scripted_upstream() as up:
        gw = await gateway_factory(plain_config(up.port))
        before = resources(gw.app)
        yield gw, up
        await settled(gw.app, before)
