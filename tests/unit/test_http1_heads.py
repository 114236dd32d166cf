"""Heads, status lines, chunks and body buffers of the HTTP/1.1 core, as tables."""

from __future__ import annotations

import h11
import pytest

from vocelio_proxy.wire.http1.body import BodyBuffer
from vocelio_proxy.wire.http1.chunks import LAST_CHUNK, encode_chunk
from vocelio_proxy.wire.http1.heads import REASONS, HeadError, request_head, response_head, status_line


@pytest.mark.parametrize(("status", "line"), [
    (200, "HTTP/1.1 200 OK\r\n"),
    (101, "HTTP/1.1 101 Switching Protocols\r\n"),
    (413, "HTTP/1.1 413 Content Too Large\r\n"),
    (505, "HTTP/1.1 505 HTTP Version Not Supported\r\n"),
    (599, "HTTP/1.1 599 \r\n"),
    (299, "HTTP/1.1 299 \r\n"),
])
def test_status_lines_come_from_one_table(status: int, line: str) -> None:
    assert status_line(status) == line


@pytest.mark.parametrize("status", [0, 99, 600, 1000, -200])
def test_a_status_outside_100_to_599_has_no_status_line(status: int) -> None:
    with pytest.raises(HeadError):
        status_line(status)


def test_every_registered_reason_parses_with_h11() -> None:
    for status in REASONS:
        if status < 200:
            continue
        client = h11.Connection(h11.CLIENT)
        client.send(h11.Request(method="GET", target="/", headers=[("Host", "a")]))
        client.send(h11.EndOfMessage())
        client.receive_data(response_head(status, [("X", "1")], "Content-Length: 0\r\n"))
        event = client.next_event()
        assert isinstance(event, h11.Response)
        assert event.status_code == status
        assert event.reason.decode() == REASONS[status]


def test_a_response_head_is_status_headers_framing_and_a_blank_line() -> None:
    head = response_head(201, [("Content-Type", "application/json"), ("X-Request-ID", "r1")], "Content-Length: 2\r\n")
    assert head == (b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nX-Request-ID: r1\r\n"
                    b"Content-Length: 2\r\n\r\n")


@pytest.mark.parametrize(("name", "value"), [
    ("X-Evil", "a\r\nSet-Cookie: x=1"),
    ("X-Evil", "a\nb"),
    ("X-Evil", "a\rb"),
    ("X-Evil\r\nSet-Cookie", "x"),
])
def test_a_header_field_with_a_line_break_never_reaches_the_wire(name: str, value: str) -> None:
    with pytest.raises(HeadError):
        response_head(200, [("A", "1"), (name, value)], "Content-Length: 0\r\n")
    with pytest.raises(HeadError):
        request_head("GET", "/", "h", [(name, value)], 0)


@pytest.mark.parametrize("host", ["h\r\nX-Evil: 1", "h\n"])
def test_a_host_with_a_line_break_never_reaches_the_wire(host: str) -> None:
    with pytest.raises(HeadError):
        request_head("GET", "/", host, [], 0)


@pytest.mark.parametrize("target", ["/a b", "/a\r\nX: y", "/\x00", ""])
def test_a_request_target_with_spaces_or_controls_is_refused(target: str) -> None:
    with pytest.raises(HeadError):
        request_head("GET", target, "h", [], 0)


@pytest.mark.parametrize(("method", "length", "framing"), [
    ("GET", 0, None),
    ("POST", 0, b"Content-Length: 0"),
    ("PUT", 5, b"Content-Length: 5"),
    ("DELETE", 3, b"Content-Length: 3"),
    ("POST", None, b"Transfer-Encoding: chunked"),
])
def test_request_heads_carry_the_framing_of_the_body_they_announce(method: str, length: int | None,
                                                                   framing: bytes | None) -> None:
    head = request_head(method, "/x", "backend:80",
                        [("Host", "client"), ("Content-Length", "99"), ("Transfer-Encoding", "chunked"),
                         ("Accept", "*/*")], length)
    lines = head.split(b"\r\n")
    assert lines[0] == method.encode() + b" /x HTTP/1.1"
    assert lines[1] == b"Host: backend:80"
    assert b"Host: client" not in head
    assert b"99" not in head
    assert lines.count(b"Accept: */*") == 1
    framing_lines = [line for line in lines if line.startswith((b"Content-Length", b"Transfer-Encoding"))]
    assert framing_lines == ([framing] if framing else [])
    assert head.endswith(b"\r\n\r\n")


def test_request_heads_parse_with_h11() -> None:
    head = request_head("POST", "/a?b=1", "h:1", [("X-A", "1"), ("x-b", "two words")], 3)
    server = h11.Connection(h11.SERVER)
    server.receive_data(head + b"abc")
    request = server.next_event()
    assert isinstance(request, h11.Request)
    assert (request.method, request.target) == (b"POST", b"/a?b=1")
    assert (b"x-b", b"two words") in list(request.headers)
    assert bytes(server.next_event().data) == b"abc"  # type: ignore[union-attr]


@pytest.mark.parametrize(("data", "chunk"), [
    (b"hello", b"5\r\nhello\r\n"),
    (b"x" * 255, b"ff\r\n" + b"x" * 255 + b"\r\n"),
    (b"", b""),
])
def test_chunks_are_hex_sized_and_an_empty_write_is_no_chunk(data: bytes, chunk: bytes) -> None:
    assert encode_chunk(data) == chunk
    assert LAST_CHUNK == b"0\r\n\r\n"


def test_a_body_buffer_pauses_above_the_high_watermark_and_resumes_below_the_low() -> None:
    body = BodyBuffer(high=10, low=4)
    assert body.push(b"12345") is False
    assert body.push(b"123456") is True  # 11 > 10
    assert body.size == 11
    assert body.received == 11
    chunk, resume = body.pop()
    assert (chunk, resume) == (b"12345", False)  # 6 left, not below 4
    chunk, resume = body.pop()
    assert (chunk, resume) == (b"123456", True)
    assert body.pop() == (None, False)
    assert body.received == 11
    assert body.size == 0


def test_a_body_buffer_counts_every_byte_against_its_budget() -> None:
    body = BodyBuffer(limit=8)
    body.push(b"12345")
    body.pop()
    assert not body.over_budget
    body.push(b"6789")
    assert body.over_budget  # 9 bytes received, though only 4 are buffered


def test_a_body_ends_once_and_the_first_error_wins() -> None:
    body = BodyBuffer()
    first, second = ValueError("first"), ValueError("second")
    body.fail(first)
    body.fail(second)
    assert body.error is first
    assert body.failed
    done = BodyBuffer()
    done.finish()
    done.fail(first)
    assert done.error is None
    assert done.complete


def test_a_reset_body_buffer_is_ready_for_the_next_message() -> None:
    body = BodyBuffer()
    body.push(b"abc")
    body.finish()
    body.reset()
    assert (body.size, body.received, body.done, body.error) == (0, 0, False, None)
    body.push(b"x")
    assert body.take_all() == b"x"
    assert body.size == 0
