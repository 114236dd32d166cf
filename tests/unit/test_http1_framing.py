"""The HTTP/1.1 framing decisions as tables, no sockets: request targets, Host,
request body framing, keep-alive, the framing of responses the gateway writes,
and how an upstream response is delimited."""

from __future__ import annotations

import pytest

from vocelio_proxy.wire.http1.framing import (
    BY_LENGTH,
    CHUNKED,
    NO_BODY,
    UNTIL_CLOSE,
    WireError,
    expects_continue,
    index_headers,
    parse_content_length,
    request_body_framing,
    request_keep_alive,
    request_target,
    response_framing,
    upstream_body_framing,
    valid_authority,
)


@pytest.mark.parametrize(("method", "url", "expected"), [
    ("GET", "/a/b?x=1", ("/a/b?x=1", None)),
    ("GET", "http://api.example.com/a?x=1", ("/a?x=1", "api.example.com")),
    ("GET", "HTTPS://api.example.com:8443", ("/", "api.example.com:8443")),
    ("GET", "http://api.example.com?x=1", ("/?x=1", "api.example.com")),
    ("GET", "http://[::1]:8080/p", ("/p", "[::1]:8080")),
    ("OPTIONS", "*", ("*", None)),
    ("CONNECT", "example.com:443", ("example.com:443", "example.com:443")),
])
def test_request_targets_in_each_form_mean_one_thing(method: str, url: str, expected: tuple[str, str | None]) -> None:
    assert request_target(method, url) == expected


@pytest.mark.parametrize(("method", "url"), [
    ("GET", "/a#b"),
    ("GET", "/api/v1/x/admin#"),
    ("GET", "http://h/p#frag"),
    ("GET", "*"),
    ("GET", "http://user@host/p"),
    ("GET", "http://host:@evil/p"),
    ("GET", "http:///p"),
    ("GET", "ftp://host/p"),
    ("GET", "host:80"),
    ("GET", "a/b"),
    ("GET", "/a b"),
    ("GET", "/a\tb"),
    ("GET", "/\x7f"),
    ("GET", "/é"),
    ("GET", ""),
    ("CONNECT", "a b:1"),
])
def test_a_target_with_a_fragment_or_in_no_valid_form_is_refused(method: str, url: str) -> None:
    with pytest.raises(WireError) as refused:
        request_target(method, url)
    assert refused.value.status == 400


@pytest.mark.parametrize(("value", "ok"), [
    ("api.example.com", True), ("api.example.com:8080", True), ("10.0.0.1:80", True), ("[::1]", True),
    ("[2001:db8::1]:443", True), ("", True), ("xn--bcher-kva.example", True), ("host:", True),
    ("host:@evil", False), ("user@host", False), ("a b", False), ("host/path", False), ("host:8o", False),
    ("[::1", False), ("host\\evil", False), ("ho\x00st", False), ("hóst", False),
])
def test_host_values_are_authorities(value: str, ok: bool) -> None:
    assert valid_authority(value) is ok


@pytest.mark.parametrize(("headers", "status"), [
    ([("Host", "a"), ("host", "b")], 400),
    ([("Host", "a"), ("HOST", "a")], 400),
    ([("Content-Length", "1"), ("Content-Length", "1")], 400),
    ([("Transfer-Encoding", "gzip"), ("Transfer-Encoding", "chunked")], 400),
])
def test_repeated_singleton_fields_are_refused(headers: list[tuple[str, str]], status: int) -> None:
    with pytest.raises(WireError) as refused:
        index_headers(headers)
    assert refused.value.status == status


def test_other_repeated_fields_are_joined_in_order() -> None:
    assert index_headers([("Accept", "a"), ("X", "1"), ("accept", "b")]) == {"accept": "a, b", "x": "1"}


@pytest.mark.parametrize(("version", "lookup", "expected"), [
    ("1.1", {}, (None, False)),
    ("1.1", {"content-length": "0"}, (0, False)),
    ("1.1", {"content-length": "42"}, (42, False)),
    ("1.0", {"content-length": "42"}, (42, False)),
    ("1.1", {"transfer-encoding": "chunked"}, (None, True)),
    ("1.1", {"transfer-encoding": "Chunked"}, (None, True)),
    ("1.1", {"transfer-encoding": " chunked "}, (None, True)),
])
def test_request_body_framing_is_length_chunked_or_none(version: str, lookup: dict[str, str],
                                                        expected: tuple[int | None, bool]) -> None:
    assert request_body_framing(version, lookup) == expected


@pytest.mark.parametrize(("version", "lookup", "status"), [
    ("1.1", {"transfer-encoding": "chunked", "content-length": "5"}, 400),
    ("1.0", {"transfer-encoding": "chunked"}, 400),
    ("1.1", {"transfer-encoding": "chunked, gzip"}, 400),
    ("1.1", {"transfer-encoding": "xchunked"}, 400),
    ("1.1", {"transfer-encoding": "identity"}, 400),
    ("1.1", {"transfer-encoding": "chunked, chunked"}, 400),
    ("1.1", {"transfer-encoding": ""}, 400),
    ("1.1", {"transfer-encoding": "gzip, chunked"}, 501),
    ("1.1", {"transfer-encoding": ",chunked"}, 501),
    ("1.1", {"content-length": "+5"}, 400),
    ("1.1", {"content-length": "-1"}, 400),
    ("1.1", {"content-length": "5, 5"}, 400),
    ("1.1", {"content-length": "0x10"}, 400),
    ("1.1", {"content-length": "1_0"}, 400),
    ("1.1", {"content-length": "²"}, 400),
    ("1.1", {"content-length": ""}, 400),
    ("1.1", {"content-length": "9" * 19}, 400),
])
def test_ambiguous_or_unsupported_request_framing_is_refused(version: str, lookup: dict[str, str],
                                                             status: int) -> None:
    with pytest.raises(WireError) as refused:
        request_body_framing(version, lookup)
    assert refused.value.status == status


def test_content_length_is_a_decimal_number() -> None:
    assert parse_content_length("007") == 7


@pytest.mark.parametrize(("version", "connection", "keep"), [
    ("1.1", None, True), ("1.1", "close", False), ("1.1", "Keep-Alive, Close", False), ("1.1", "keep-alive", True),
    ("1.1", "upgrade", True), ("1.0", None, False), ("1.0", "keep-alive", True), ("1.0", "Keep-Alive", True),
    ("1.0", "keep-alive, close", False),
])
def test_keep_alive_follows_the_version_and_connection_options(version: str, connection: str | None,
                                                                keep: bool) -> None:
    assert request_keep_alive(version, connection) is keep


@pytest.mark.parametrize(("version", "expect", "result"), [
    ("1.1", "100-continue", True), ("1.1", "100-Continue", True), ("1.0", "100-continue", False),
    ("1.1", None, False), ("1.1", "something-else", False),
])
def test_100_continue_is_honoured_on_http_1_1_only(version: str, expect: str | None, result: bool) -> None:
    assert expects_continue(version, expect) is result


@pytest.mark.parametrize(("version", "keep", "status", "length", "expected"), [
    ("1.1", True, 200, 5, ("Content-Length: 5\r\n", False, True)),
    ("1.1", True, 200, None, ("Transfer-Encoding: chunked\r\n", True, True)),
    ("1.1", False, 200, 5, ("Content-Length: 5\r\nConnection: close\r\n", False, False)),
    ("1.0", True, 200, 5, ("Content-Length: 5\r\nConnection: keep-alive\r\n", False, True)),
    ("1.0", True, 200, None, ("Connection: close\r\n", False, False)),
    ("1.1", True, 204, 0, ("", False, True)),
    ("1.1", True, 304, None, ("", False, True)),
    ("1.1", True, 101, None, ("", False, True)),
    ("1.1", False, 204, None, ("Connection: close\r\n", False, False)),
])
def test_responses_are_framed_by_length_chunks_or_close(version: str, keep: bool, status: int, length: int | None,
                                                         expected: tuple[str, bool, bool]) -> None:
    assert response_framing(version, keep, status, length) == expected


@pytest.mark.parametrize(("status", "head", "version", "headers", "expected"), [
    (200, False, "1.1", [("Content-Length", "3")], (BY_LENGTH, True)),
    (200, False, "1.1", [("Transfer-Encoding", "chunked")], (CHUNKED, True)),
    (200, False, "1.0", [("Transfer-Encoding", "chunked")], (CHUNKED, False)),
    (200, False, "1.1", [("Transfer-Encoding", "gzip")], (UNTIL_CLOSE, False)),
    (200, False, "1.1", [("Transfer-Encoding", "chunked, gzip")], (UNTIL_CLOSE, False)),
    (200, False, "1.1", [("Transfer-Encoding", "gzip, chunked")], (CHUNKED, True)),
    (200, False, "1.1", [], (UNTIL_CLOSE, False)),
    (204, False, "1.1", [], (NO_BODY, True)),
    (204, False, "1.1", [("Content-Length", "0")], (NO_BODY, True)),
    (304, False, "1.1", [], (NO_BODY, True)),
    (304, False, "1.1", [("Content-Length", "0")], (NO_BODY, True)),
    (103, False, "1.1", [], (NO_BODY, True)),
    (100, False, "1.1", [("Content-Length", "0")], (NO_BODY, True)),
    (101, False, "1.1", [], (NO_BODY, True)),
    (200, True, "1.1", [("Content-Length", "0")], (NO_BODY, True)),
    (200, True, "1.1", [], (NO_BODY, True)),
    # A no-body answer whose head announces bytes: relayed, the connection never reused
    # (the bytes may still come and would be read as the next request's answer).
    (204, False, "1.1", [("Content-Length", "79")], (NO_BODY, False)),
    (204, False, "1.1", [("Transfer-Encoding", "chunked")], (NO_BODY, False)),
    (204, False, "1.0", [("Transfer-Encoding", "gzip")], (NO_BODY, False)),
    (304, False, "1.1", [("Content-Length", "10")], (NO_BODY, False)),
    (304, False, "1.1", [("Transfer-Encoding", "chunked")], (NO_BODY, False)),
    (200, True, "1.1", [("Content-Length", "1234")], (NO_BODY, False)),
    (404, True, "1.1", [("Transfer-Encoding", "chunked")], (NO_BODY, False)),
])
def test_upstream_bodies_are_delimited_per_rfc_9112_6_3(status: int, head: bool, version: str,
                                                        headers: list[tuple[str, str]],
                                                        expected: tuple[int, bool]) -> None:
    assert upstream_body_framing(status, head, version, headers) == expected


@pytest.mark.parametrize(("status", "headers"), [
    (200, [("Content-Length", "3"), ("Transfer-Encoding", "chunked")]),
    (204, [("Transfer-Encoding", "chunked"), ("Content-Length", "0")]),
    (200, [("Content-Length", "3"), ("content-length", "3")]),
    (200, [("Content-Length", "3, 3")]),
    (200, [("Content-Length", "-3")]),
    (99, [("Content-Length", "0")]),
    (600, [("Content-Length", "0")]),
    # Content-Length is checked whatever the status: a no-body answer with a bad one too.
    (204, [("Content-Length", "x")]),
    (304, [("Content-Length", "1"), ("Content-Length", "1")]),
    # An interim answer that announces a body (RFC 9110 §8.6, RFC 9112 §6.1: MUST NOT):
    # llhttp would read it (for 1xx above 103) into the final answer.
    (100, [("Content-Length", "5")]),
    (150, [("Content-Length", "5")]),
    (103, [("Transfer-Encoding", "chunked")]),
    (101, [("Transfer-Encoding", "chunked")]),
    (101, [("Content-Length", "10")]),
])
def test_upstream_responses_two_readers_could_frame_differently_are_refused(
        status: int, headers: list[tuple[str, str]]) -> None:
    with pytest.raises(WireError) as refused:
        upstream_body_framing(status, False, "1.1", headers)
    assert refused.value.status == 502


def test_the_upstream_version_is_only_asked_for_when_a_chunked_answer_needs_it() -> None:
    asked: list[int] = []

    def version() -> str:
        asked.append(1)
        return "1.0"

    assert upstream_body_framing(200, False, version, [("Content-Length", "1")]) == (BY_LENGTH, True)
    assert asked == []
    assert upstream_body_framing(200, False, version, [("Transfer-Encoding", "chunked")]) == (CHUNKED, False)
    assert asked == [1]
