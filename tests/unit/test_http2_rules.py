"""The sans-I/O HTTP/2 rules (wire/http2/rules.py): the frame meter's budgets
with an injected clock, the request-head checks h2 does not make, and the
fields that are never sent on HTTP/2."""

from __future__ import annotations

import pytest
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from vocelio_proxy.wire.http2.rules import (
    PREFACE,
    FrameMeter,
    H2Limits,
    MalformedRequest,
    WindowBudget,
    request_head,
    response_fields,
    trailer_fields,
)

_BASE = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"api.example.com"), (b":path", b"/a?b=1")]


def _headers(sid: int, size: int, end_headers: bool) -> bytes:
    frame = HeadersFrame(sid, data=b"\x00" * size)
    if end_headers:
        frame.flags.add("END_HEADERS")
    return frame.serialize()


def test_a_header_block_over_its_byte_cap_is_refused_across_continuations() -> None:
    meter = FrameMeter(H2Limits(max_header_block_bytes=40000))
    assert meter.feed(PREFACE + _headers(1, 16000, False), 0.0) is None
    assert meter.feed(ContinuationFrame(1, data=b"\x00" * 16000).serialize(), 0.0) is None
    verdict = meter.feed(ContinuationFrame(1, data=b"\x00" * 16000).serialize(), 0.0)
    assert verdict is not None
    assert "CONTINUATION" in verdict


def test_a_header_block_that_ends_resets_the_count() -> None:
    meter = FrameMeter(H2Limits(max_header_block_bytes=20000))
    meter.feed(PREFACE, 0.0)
    for sid in range(1, 40, 2):
        assert meter.feed(_headers(sid, 15000, True), 0.0) is None
    assert meter.block_since is None
    meter.feed(_headers(41, 100, False), 3.0)
    assert meter.block_since == 3.0


def test_frames_split_at_every_byte_are_metered_the_same() -> None:
    data = PREFACE + b"".join(PingFrame(0).serialize() for _ in range(12))
    whole = FrameMeter(H2Limits(max_control_frames=10))
    split = FrameMeter(H2Limits(max_control_frames=10))
    assert whole.feed(data, 0.0) is not None
    at = next(i for i in range(len(data)) if split.feed(data[i:i + 1], 0.0) is not None)
    assert at < len(data) - 9  # refused at the eleventh frame's header, before the twelfth
    assert split.frames == whole.frames == 11


def test_control_frames_without_progress_are_budgeted_per_window() -> None:
    meter = FrameMeter(H2Limits(max_control_frames=10, budget_window_s=10.0))
    meter.feed(PREFACE, 0.0)
    frames = [SettingsFrame(0), PingFrame(0), WindowUpdateFrame(0, window_increment=1), DataFrame(1)]
    for i in range(10):
        assert meter.feed(frames[i % 4].serialize(), 1.0) is None
    assert meter.feed(PingFrame(0).serialize(), 1.0) is not None
    # A new window starts a new budget.
    assert meter.feed(PingFrame(0).serialize(), 11.5) is None


def test_data_with_bytes_or_an_end_is_progress_not_control() -> None:
    meter = FrameMeter(H2Limits(max_control_frames=10))
    meter.feed(PREFACE, 0.0)
    for _ in range(100):
        assert meter.feed(DataFrame(1, data=b"x").serialize(), 0.0) is None
    end = DataFrame(1)
    end.flags.add("END_STREAM")
    assert meter.feed(end.serialize(), 0.0) is None


def test_stream_resets_are_budgeted_rapid_reset() -> None:
    meter = FrameMeter(H2Limits(max_resets=5))
    meter.feed(PREFACE, 0.0)
    for sid in range(1, 11, 2):
        assert meter.feed(_headers(sid, 10, True) + RstStreamFrame(sid).serialize(), 0.0) is None
    verdict = meter.feed(_headers(11, 10, True) + RstStreamFrame(11).serialize(), 0.0)
    assert verdict is not None
    assert "rapid reset" in verdict


def test_stream_errors_the_gateway_raises_spend_the_reset_budget() -> None:
    meter = FrameMeter(H2Limits(max_resets=2))
    assert meter.stream_error(0.0) is None
    assert meter.stream_error(0.0) is None
    assert meter.stream_error(0.0) is not None


def test_a_window_budget_restarts_after_its_window() -> None:
    budget = WindowBudget(2, 1.0)
    assert not budget.spend(0.0)
    assert not budget.spend(0.5)
    assert budget.spend(0.9)
    assert not budget.spend(1.0)


def test_a_request_head_becomes_the_pipelines_fields_with_cookies_joined() -> None:
    head = request_head([*_BASE, (b"cookie", b"a=1"), (b"accept", b"*/*"), (b"cookie", b"b=2")], 100)
    assert (head.method, head.target, head.authority) == ("GET", "/a?b=1", "api.example.com")
    assert head.lookup["host"] == "api.example.com"
    assert head.lookup["cookie"] == "a=1; b=2"
    assert ("cookie", "a=1; b=2") in head.headers
    assert not any(name.startswith(":") for name, _ in head.headers)


@pytest.mark.parametrize(("fields", "reason"), [
    ([*_BASE, (b"x-a", b"1\r\nx-b: 2")], "control character"),
    ([*_BASE, (b"x-a", b"1\x002")], "control character"),
    ([*_BASE, (b"x-a", b"1\x012")], "control character"),
    ([*_BASE, (b"x-a", b"1\x7f")], "control character"),
    ([*_BASE, (b"bad name", b"1")], "invalid field name"),
    ([*_BASE, (b"X-Upper", b"1")], "invalid field name"),
    ([*_BASE, (b":status", b"200")], "pseudo-header"),
    ([(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"a"), (b":path", b"/a b")], ":path"),
    ([(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"a"), (b":path", b"a")], ":path"),
    ([(b":method", b"G T"), (b":scheme", b"http"), (b":authority", b"a"), (b":path", b"/")], ":method"),
    ([(b":method", b"CONNECT"), (b":authority", b"u@a:443")], ":authority"),
    ([(b":method", b"GET"), (b":scheme", b"ftp"), (b":authority", b"a"), (b":path", b"/")], ":scheme"),
    ([(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"u@a"), (b":path", b"/")], ":authority"),
    ([(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"a b"), (b":path", b"/")], ":authority"),
    ([*_BASE, (b"host", b"other.example.com")], "differ"),
    ([(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/")], "no valid :authority"),
    ([*_BASE, (b"content-length", b"1, 2")], "content-length"),
    ([*_BASE, (b"content-length", b"-1")], "content-length"),
    ([(b":method", b"head"), (b":scheme", b"http"), (b":authority", b"a"), (b":path", b"/")], ":method"),
    ([(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"a:80:90"), (b":path", b"/")], ":authority"),
    ([(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"a:8x"), (b":path", b"/")], ":authority"),
    ([(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"a[1]"), (b":path", b"/")], ":authority"),
    ([(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b"host", b"a:80:90")], "no valid :authority"),
])
def test_malformed_request_heads_are_refused(fields: list[tuple[bytes, bytes]], reason: str) -> None:
    with pytest.raises(MalformedRequest, match=reason):
        request_head(fields, 100)


def test_a_content_length_on_headers_that_end_the_stream_is_malformed_unless_zero() -> None:
    with pytest.raises(MalformedRequest, match="without a body"):
        request_head([*_BASE, (b"content-length", b"5")], 100, ended=True)
    assert request_head([*_BASE, (b"content-length", b"0")], 100, ended=True).content_length == 0
    assert request_head([*_BASE, (b"content-length", b"5")], 100, ended=False).content_length == 5


def test_a_connect_request_carries_its_authority_as_target_for_the_pipeline_to_refuse() -> None:
    head = request_head([(b":method", b"CONNECT"), (b":authority", b"db.internal:5432")], 10)
    assert (head.method, head.target, head.lookup["host"]) == ("CONNECT", "db.internal:5432", "db.internal:5432")


def test_too_many_header_fields_are_refused() -> None:
    with pytest.raises(MalformedRequest, match="more than 3"):
        request_head([*_BASE, *[(b"x-%d" % i, b"v") for i in range(4)]], 3)


def test_options_star_and_a_host_header_without_authority_are_accepted() -> None:
    head = request_head([(b":method", b"OPTIONS"), (b":scheme", b"http"), (b":path", b"*"), (b"host", b"a:8080")], 10)
    assert (head.target, head.authority) == ("*", "a:8080")


def test_connection_specific_fields_are_never_sent_on_http2() -> None:
    fields = response_fields(200, [("Connection", "keep-alive"), ("Keep-Alive", "5"), ("Transfer-Encoding", "chunked"),
                                   ("Upgrade", "h2c"), ("Proxy-Connection", "x"), ("Content-Length", "99"),
                                   ("X-Ok", " v "), ("X-Bad", "a\r\nb")], 12)
    assert fields == [(b":status", b"200"), (b"x-ok", b"v"), (b"content-length", b"12")]


def test_trailers_never_carry_pseudo_headers_or_framing_fields() -> None:
    fields = trailer_fields([("grpc-status", "0"), (":status", "200"), ("Content-Length", "1"), ("TE", "x"),
                             ("grpc-message", "fine")])
    assert fields == [(b"grpc-status", b"0"), (b"grpc-message", b"fine")]
