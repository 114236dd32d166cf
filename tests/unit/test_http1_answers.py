"""`http1.answers.UpstreamHeadReader`, the one reader of upstream answer heads
(pooled requests and upgrades): field limits, trailers, whitespace, and the raw
byte bound of a head that never ends. Bytes in, no sockets."""

from __future__ import annotations

import httptools
import pytest

from vocelio_proxy.wire.http1.answers import UpstreamHeadReader
from vocelio_proxy.wire.http1.framing import WireError
from vocelio_proxy.wire.http1.limits import UPSTREAM_MAX_HEAD_READ, UPSTREAM_MAX_HEADER_BYTES, UPSTREAM_MAX_HEADERS


class Reader:
    """The smallest shell, holding the reader as the real ones do: feeds bytes, marks
    the head complete, bounds an incomplete head."""

    def __init__(self) -> None:
        self.head = UpstreamHeadReader()
        self.parser = httptools.HttpResponseParser(self)
        self.fed = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head.on_header(name, value)

    def on_headers_complete(self) -> None:
        self.head.in_body = True

    def feed(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, WireError):
                raise exc.__context__ from None
            raise
        self.fed += len(data)
        if not self.head.in_body:
            self.head.head_read(len(data))

    @property
    def fields(self) -> list[tuple[str, str]]:
        return self.head.fields


def _head(fields: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\n" + fields + b"Content-Length: 0\r\n\r\n"


def test_fields_up_to_the_count_are_read() -> None:
    reader = Reader()
    reader.feed(_head(b"".join(b"X-%d: v\r\n" % i for i in range(UPSTREAM_MAX_HEADERS - 1))))
    assert len(reader.fields) == UPSTREAM_MAX_HEADERS


@pytest.mark.parametrize("fields", [
    b"".join(b"X-%d: v\r\n" % i for i in range(UPSTREAM_MAX_HEADERS)),
    b"X-Big: " + b"v" * (UPSTREAM_MAX_HEADER_BYTES - 5) + b"\r\n",
    b"".join(b"X-%d: %s\r\n" % (i, b"v" * 1000) for i in range(70)),
], ids=["one field over the count", "one value over the size", "many values over the size"])
def test_a_head_over_the_upstream_limits_is_refused_with_a_502(fields: bytes) -> None:
    with pytest.raises(WireError) as refused:
        Reader().feed(_head(fields))
    assert refused.value.status == 502


def test_values_lose_trailing_whitespace_and_names_keep_their_spelling() -> None:
    reader = Reader()
    reader.feed(_head(b"X-Odd-Case: a b \t \r\n"))
    assert reader.fields[0] == ("X-Odd-Case", "a b")


def test_trailer_fields_never_join_the_head() -> None:
    reader = Reader()
    reader.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nAuthorization: x\r\n\r\n")
    assert [name for name, _ in reader.fields] == ["Transfer-Encoding"]


@pytest.mark.parametrize("piece", [1, 1000, 65536])
def test_a_head_that_never_ends_is_refused_within_one_read_of_the_bound(piece: int) -> None:
    # llhttp hands a field over only once it ends: without the raw bound, an endless
    # value would be buffered until the answer deadline.
    reader = Reader()
    reader.feed(b"HTTP/1.1 200 OK\r\nX-Endless: ")

    def feed_endlessly() -> None:
        for _ in range(UPSTREAM_MAX_HEAD_READ * 2 // piece + 2):
            reader.feed(b"v" * piece)

    with pytest.raises(WireError) as refused:
        feed_endlessly()
    assert refused.value.status == 502
    assert reader.fed <= UPSTREAM_MAX_HEAD_READ + piece


def test_the_raw_bound_covers_the_interim_heads_of_one_answer_and_restarts_per_answer() -> None:
    reader = UpstreamHeadReader()
    reader.start_head()
    reader.head_read(UPSTREAM_MAX_HEAD_READ - 10)
    reader.start_head(interim=True)
    with pytest.raises(WireError):
        reader.head_read(11)
    reader.start_head()
    reader.head_read(UPSTREAM_MAX_HEAD_READ)  # a new answer: the count starts again


def test_a_largest_legal_head_fits_the_raw_bound() -> None:
    # Every field at its limits, with separators and line ends, stays under the raw bound.
    value = b"v" * (UPSTREAM_MAX_HEADER_BYTES // UPSTREAM_MAX_HEADERS - 8)
    head = _head(b"".join(b"X-%04d: %s\r\n" % (i, value) for i in range(UPSTREAM_MAX_HEADERS - 1)))
    assert len(head) <= UPSTREAM_MAX_HEAD_READ
    reader = Reader()
    for at in range(0, len(head), 512):
        reader.feed(head[at:at + 512])
    assert len(reader.fields) == UPSTREAM_MAX_HEADERS
