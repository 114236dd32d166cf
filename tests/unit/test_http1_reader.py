"""The sans-I/O request reader, fed bytes with no sockets: what it accepts and
what it means, what it refuses with which status, trailers, body budgets,
upgrades, and pausing mid-stream."""

from __future__ import annotations

import pytest

from tests.harness.wire_tools import Recorder, read_with_gateway
from vocelio_proxy.wire.http1.framing import WireError
from vocelio_proxy.wire.http1.limits import PARSE_SLICE, WireLimits
from vocelio_proxy.wire.http1.reader import RequestReader

CHUNKED = b"POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"


def test_a_plain_request_becomes_one_exchange() -> None:
    out = read_with_gateway(b"GET /a/b?c=d HTTP/1.1\r\nHost: api.example.com\r\nAccept: */*  \r\n\r\n")
    assert out.end == "ok"
    [req] = out.requests
    assert (req.method, req.target, req.host, req.keep_alive) == ("GET", "/a/b?c=d", "api.example.com", True)
    assert req.headers == [("Host", "api.example.com"), ("Accept", "*/*")]  # trailing whitespace removed
    assert (req.content_length, req.chunked, req.body) == (None, False, b"")


def test_an_absolute_form_target_supplies_the_authority_and_the_path_goes_on() -> None:
    out = read_with_gateway(b"GET http://Public.Example:8080/api/v1/x?q=1 HTTP/1.1\r\nHost: other\r\n\r\n")
    [req] = out.requests
    assert (req.target, req.host) == ("/api/v1/x?q=1", "Public.Example:8080")


def test_bodies_arrive_whole_by_length_and_by_chunks() -> None:
    out = read_with_gateway(b"PUT /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
                            + CHUNKED + b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
    first, second = out.requests
    assert (first.content_length, first.chunked, first.body) == (5, False, b"hello")
    assert (second.content_length, second.chunked, second.body) == (None, True, b"abcde")


def test_trailer_fields_never_become_headers() -> None:
    sink = Recorder()
    reader = RequestReader(sink, WireLimits())
    reader.feed(CHUNKED + b"1\r\nx\r\n0\r\nAuthorization: Bearer forged\r\nX-API-Key: k\r\n"
                          b"X-Vocelio-User: admin\r\n\r\n")
    [ex] = sink.exchanges
    assert sink.requests[0].complete
    assert sink.requests[0].body == b"x"
    names = {name.lower() for name, _ in ex.headers}
    assert names == {"host", "transfer-encoding"}
    assert set(ex.lookup) == {"host", "transfer-encoding"}


def test_trailers_larger_than_the_header_budget_are_refused() -> None:
    out = read_with_gateway(CHUNKED + b"1\r\nx\r\n0\r\nX-Big: " + b"a" * 2000 + b"\r\n\r\n",
                            limits=WireLimits(max_header_bytes=1024))
    assert (out.end, out.status) == ("rejected", 431)
    many = b"".join(b"T%d: v\r\n" % i for i in range(20))
    out = read_with_gateway(CHUNKED + b"1\r\nx\r\n0\r\n" + many + b"\r\n", limits=WireLimits(max_headers=10))
    assert (out.end, out.status) == ("rejected", 431)


def test_a_chunked_body_over_the_body_budget_is_refused_as_it_arrives() -> None:
    chunk = b"400\r\n" + b"x" * 1024 + b"\r\n"
    out = read_with_gateway(CHUNKED + chunk * 3, limits=WireLimits(max_body_bytes=2048))
    assert (out.end, out.status) == ("rejected", 413)


def _req(head: bytes) -> bytes:
    return head + b"\r\n\r\n"


@pytest.mark.parametrize(("data", "status"), [
    (_req(b"GET /a#b HTTP/1.1\r\nHost: a"), 400),
    (_req(b"GET /api/v1/x/admin# HTTP/1.1\r\nHost: a"), 400),
    (_req(b"GET http://h/p#f HTTP/1.1\r\nHost: a"), 400),
    (_req(b"GET / HTTP/1.1"), 400),
    (_req(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b"), 400),
    (_req(b"GET / HTTP/1.1\r\nHost: a\r\nHost: a"), 400),
    (_req(b"GET / HTTP/1.1\r\nHost: host:@evil"), 400),
    (_req(b"GET / HTTP/1.1\r\nHost: a b"), 400),
    (_req(b"GET http://u@h/ HTTP/1.1\r\nHost: h"), 400),
    (_req(b"GET * HTTP/1.1\r\nHost: a"), 400),
    (_req(b"GET / HTTP/2.0\r\nHost: a"), 505),
    (_req(b"GET / HTTP/0.9\r\nHost: a"), 505),
    (_req(b"GET / HTTP/1.2\r\nHost: a"), 400),
    (_req(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1") + b"x", 400),
    (_req(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 1") + b"x", 400),
    (_req(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked") + b"0\r\n\r\n", 400),
    (_req(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 1") + b"0\r\n\r\n", 400),
    (_req(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip") + b"0\r\n\r\n", 400),
    (_req(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked") + b"0\r\n\r\n", 501),
    (_req(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked") + b"0\r\n\r\n", 400),
    (_req(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked")
     + b"0\r\n\r\n", 400),
    (_req(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked") + b"0\r\n\r\n", 400),
    (_req(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b"), 400),
    (_req(b"GET / HTTP/1.1\r\nHost: a\r\nX : a"), 400),
    (b"GET / HTTP/1.1\nHost: a\n\n", 400),
    (_req(b"GET / HTTP/1.1\r\nHost: a\nX: b"), 400),
    (_req(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb"), 400),
    (_req(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b"), 400),
    (_req(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b"), 400),
    (_req(b"GET / HTTP/1.1\r\nHost: a\r\nX(y): a"), 400),
    (_req(b"GET / HTTP/1.1\r\nHost: a\r\n: a"), 400),
    (_req(b"GET / HTTP/1.1\r\nHost: a\r\nX\x00: a"), 400),
    (_req(b"GET /\xc3\xa9 HTTP/1.1\r\nHost: a"), 400),
    (CHUNKED + b"zz\r\n", 400),
    (CHUNKED + b"fffffffffffffffff\r\n", 400),
    (CHUNKED + b"1 \r\nx\r\n0\r\n\r\n", 400),
    (CHUNKED + b"1;a=\"b\r\nx\r\n0\r\n\r\n", 400),
    (CHUNKED + b"1\r\nxy0\r\n\r\n", 400),
    (CHUNKED + b"1\nx\n0\n\n", 400),
    (CHUNKED + b"-1\r\n", 400),
    (CHUNKED + b"0\r\nContent-Length: 5\r\n\r\n", 400),
    (CHUNKED + b"0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    (_req(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\nContent-Length: 3") + b"abc",
     400),
])
def test_requests_the_gateway_refuses(data: bytes, status: int) -> None:
    out = read_with_gateway(data)
    assert (out.end, out.status) == ("rejected", status), out
    # Whole, or byte by byte: the same refusal.
    assert read_with_gateway(data, pieces=list(range(len(data)))).status == status


def test_a_target_over_the_url_limit_is_414_and_headers_over_theirs_431() -> None:
    limits = WireLimits(max_url_bytes=300, max_header_bytes=1024, max_headers=10)
    assert read_with_gateway(_req(b"GET /" + b"a" * 400 + b" HTTP/1.1\r\nHost: a"), limits=limits).status == 414
    assert read_with_gateway(_req(b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"v" * 1100), limits=limits).status == 431
    many = b"\r\n".join(b"X%d: v" % i for i in range(12))
    assert read_with_gateway(_req(b"GET / HTTP/1.1\r\nHost: a\r\n" + many), limits=limits).status == 431


@pytest.mark.parametrize(("data", "keep"), [
    (_req(b"GET / HTTP/1.1\r\nHost: a"), True),
    (_req(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close"), False),
    (_req(b"GET / HTTP/1.0"), False),
    (_req(b"GET / HTTP/1.0\r\nConnection: keep-alive"), True),
])
def test_keep_alive_is_decided_from_version_and_connection(data: bytes, keep: bool) -> None:
    assert read_with_gateway(data).requests[0].keep_alive is keep


def test_expect_100_continue_is_reported_only_for_requests_with_a_body() -> None:
    out = read_with_gateway(_req(b"PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nExpect: 100-continue") + b"ok"
                            + _req(b"GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue"))
    assert [r.expect_continue for r in out.requests] == [True, False]


def test_an_upgrade_hands_the_bytes_after_its_head_to_the_tunnel() -> None:
    head = _req(b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket")
    sink = Recorder()
    reader = RequestReader(sink, WireLimits())
    used = reader.feed(head + b"\x81\x05frame")
    assert reader.upgraded
    assert used == len(head)
    assert sink.requests[0].upgrade
    assert reader.feed(b"more") == 0  # nothing more is parsed as HTTP


def test_a_paused_reader_stops_within_one_slice_and_resumes_where_it_stopped() -> None:
    one = _req(b"GET /health HTTP/1.1\r\nHost: a")
    stream = one * 2000

    class Pausing(Recorder):
        def head_received(self, ex, has_body, expect_continue):  # type: ignore[no-untyped-def]
            super().head_received(ex, has_body, expect_continue)
            if len(self.requests) % 16 == 0:
                reader.paused = True

    sink = Pausing()
    reader = RequestReader(sink, WireLimits())
    pos = 0
    rounds = 0
    while pos < len(stream):
        before = len(sink.requests)
        used = reader.feed(stream[pos:])
        assert used > 0
        # Never more than one slice of requests beyond the pause point.
        assert len(sink.requests) - before <= 16 + PARSE_SLICE // len(one) + 1
        pos += used
        reader.paused = False
        rounds += 1
    assert len(sink.requests) == 2000
    assert all(r.complete for r in sink.requests)
    assert rounds > 10


def test_content_length_bodies_bigger_than_a_slice_are_fed_whole() -> None:
    body = bytes(range(256)) * 64  # 16 KiB
    data = _req(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %d" % len(body)) + body
    sink = Recorder()
    chunks: list[int] = []

    def counted(data: bytes) -> None:
        chunks.append(len(data))
        Recorder.body_data(sink, data)

    sink.body_data = counted  # type: ignore[method-assign]
    reader = RequestReader(sink, WireLimits())
    assert reader.feed(data) == len(data)
    assert sink.requests[0].body == body
    assert len(chunks) <= 2  # the rest of the body after the head's slice goes in one piece


def test_bytes_after_a_refusal_are_dropped() -> None:
    sink = Recorder()
    reader = RequestReader(sink, WireLimits())
    with pytest.raises(WireError):
        reader.feed(_req(b"GET /#x HTTP/1.1\r\nHost: a"))
    assert reader.failed
    later = _req(b"GET / HTTP/1.1\r\nHost: a")
    assert reader.feed(later) == len(later)
    assert reader.failed
    assert sink.requests == []
