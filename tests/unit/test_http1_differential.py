"""Differential tests of request parsing and framing: generated request streams
(valid and subtly invalid) read by the gateway's sans-I/O reader and by h11,
the strict reference. No sockets.

Wherever the two disagree, the gateway must be the stricter one: it may refuse
what h11 accepts, never accept what h11 refuses, except for the differences
named in `ALLOWED` with the RFC clause that permits them. Where both accept,
they must agree on every request: method, target, authority, headers, body
framing, body bytes and where the message ends (a different end is request
smuggling), and on keep-alive except the one documented HTTP/1.0 difference.
"""

from __future__ import annotations

import re

import hypothesis.strategies as st
from hypothesis import HealthCheck, example, given, settings

from tests.harness.wire_tools import Outcome, Parsed, read_with_gateway, read_with_h11

# -- what generated messages are made of -------------------------------------------
# A valid request, then zero to two mutations, each a known way to be subtly invalid
# (or valid in an unusual way). About a third of the messages stay valid.

_SEGMENT = st.text(alphabet="abcXYZ019-._~%!$&'()*+,;=:@", min_size=0, max_size=6)
ORIGIN_TARGETS = st.builds(lambda segs, q: "/" + "/".join(segs) + q, st.lists(_SEGMENT, max_size=3),
                           st.sampled_from(["", "?a=1", "?x=%20&y", "?"]))
ABSOLUTE_TARGETS = st.sampled_from(["http://h/p", "http://h", "http://h?q=1", "https://h:8443/p", "HTTP://H/p",
                                    "http://[::1]:80/p", "http://api.example.com/a/b?c"])
TOKEN_NAMES = ["Accept", "X-Test", "User-Agent", "Cookie", "Authorization", "X_Under", "X-Forwarded-For", "Via"]
TOKEN_VALUES = ["v", "a b", "  padded  ", "ä\xff", "a\tb", "x" * 40, "", "*/*", "1, 2"]

MUTATIONS = [
    "fragment", "no-host", "two-hosts", "same-host-twice", "bad-host", "userinfo-target", "bad-cl", "two-cl",
    "same-cl-twice", "cl-and-te", "te-variant", "two-te", "obs-fold", "space-before-colon", "bare-lf",
    "bare-cr-value", "nul-value", "ctl-value", "bad-name", "bad-version", "bad-method", "short-body", "long-body",
    "bad-chunk-size", "bad-chunk-end", "bad-trailer", "leading-crlf", "double-space", "upgrade-header",
    "connection-close", "keep-alive-1.0", "expect", "asterisk", "authority-form", "te-in-1.0", "http-1.0",
]


@st.composite
def request(draw: st.DrawFn) -> bytes:  # noqa: C901 - one branch per mutation of the generated message
    mutations = draw(st.lists(st.sampled_from(MUTATIONS), max_size=2))
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"]))
    target = draw(st.one_of(ORIGIN_TARGETS, ORIGIN_TARGETS, ABSOLUTE_TARGETS))
    version = "HTTP/1.0" if "http-1.0" in mutations or "keep-alive-1.0" in mutations else "HTTP/1.1"
    headers: list[tuple[str, str]] = [("Host", draw(st.sampled_from(["api.example.com", "h:8080", "[::1]", ""])))]
    headers += draw(st.lists(st.tuples(st.sampled_from(TOKEN_NAMES), st.sampled_from(TOKEN_VALUES)), max_size=3))
    framing = draw(st.sampled_from(["none", "cl", "te"]))
    data = draw(st.binary(min_size=0, max_size=12))
    chunks = draw(st.lists(st.binary(min_size=1, max_size=8), max_size=3))
    trailers = draw(st.sampled_from(["", "", "Authorization: forged\r\n", "X-API-Key: k\r\nX-Trace: 1\r\n"]))
    size_fmt, chunk_end = "{n:x}", "\r\n"
    sp, eol, prefix = " ", "\r\n", ""
    colon = ": "
    for m in mutations:
        if m == "fragment":
            target += draw(st.sampled_from(["#", "#frag", "#a?b"]))
        elif m == "no-host":
            headers = [h for h in headers if h[0] != "Host"]
        elif m == "two-hosts":
            headers.append(("Host", "other.example"))
        elif m == "same-host-twice":
            headers.append(("host", headers[0][1]) if headers else ("Host", "a"))
        elif m == "bad-host":
            headers = [("Host", draw(st.sampled_from(["host:@evil", "a b", "h/p", "[::1", "h:8o", "u@h"])))] + [
                h for h in headers if h[0] != "Host"]
        elif m == "userinfo-target":
            target = draw(st.sampled_from(["http://u@h/p", "http://h:@evil/p", "http:///p", "ftp://h/p"]))
        elif m == "bad-cl":
            framing = "cl"
            headers.append(("Content-Length", draw(st.sampled_from(
                ["+5", "-1", "5, 5", "0x5", "99999999999999999999", "", "1_0", "5 5"]))))
        elif m == "two-cl":
            framing = "cl"
            headers.append(("Content-Length", str(len(data) + 1)))
        elif m == "same-cl-twice":
            framing = "cl"
            headers.append(("Content-Length", str(len(data))))
        elif m == "cl-and-te":
            framing = "te"
            headers.append(("Content-Length", str(len(data))))
        elif m == "te-variant":
            framing = "te-variant"
            headers.append(("Transfer-Encoding", draw(st.sampled_from(
                ["chunked, gzip", "gzip, chunked", "xchunked", "chunked, chunked", ",chunked", "chunked,",
                 "identity", "gzip", "chunked;q=1", "", "Chunked", "CHUNKED", " chunked"]))))
        elif m == "two-te":
            framing = "te"
            headers.append(("Transfer-Encoding", draw(st.sampled_from(["chunked", "gzip"]))))
        elif m == "obs-fold":
            headers.append(("X-Folded", "a" + eol + draw(st.sampled_from([" b", "\tb"]))))
        elif m == "space-before-colon":
            colon = draw(st.sampled_from([" : ", " :", "\t:"]))
        elif m == "bare-lf":
            eol = "\n"
        elif m == "bare-cr-value":
            headers.append(("X-Cr", "a\rb"))
        elif m == "nul-value":
            headers.append(("X-Nul", "a\x00b"))
        elif m == "ctl-value":
            headers.append(("X-Ctl", draw(st.sampled_from(["a\x01b", "a\x7fb", "a\x1bb"]))))
        elif m == "bad-name":
            headers.append((draw(st.sampled_from(["X Y", "X(", "", "X-Ä", "X\x00", "X:Y"])), "v"))
        elif m == "bad-version":
            version = draw(st.sampled_from(["HTTP/2.0", "HTTP/0.9", "HTTP/1.2", "http/1.1", "HTTP/1.10", "HTTP/1"]))
        elif m == "bad-method":
            method = draw(st.sampled_from(["get", "FOO", "G ET", "GET\x00", "CONNECT"]))
        elif m == "short-body":
            framing = "cl-short"
        elif m == "long-body":
            framing = "cl-long"
        elif m == "bad-chunk-size":
            framing = "te"
            size_fmt = draw(st.sampled_from(["{n:X}", "0{n:x}", "{n:x};ext", "{n:x};a=b", '{n:x};a="q"', "{n:x} ",
                                             " {n:x}", "{n:x};", "zz", "fffffffffffffffff", "-{n:x}", "{n:x}\t"]))
            chunks = chunks or [b"x"]
        elif m == "bad-chunk-end":
            framing = "te"
            chunk_end = draw(st.sampled_from(["\n", "", "\r\nX", "\r"]))
            chunks = chunks or [b"x"]
        elif m == "bad-trailer":
            framing = "te"
            trailers = draw(st.sampled_from(["Bad Name: v\r\n", "X: a\r\n b\r\n", "X: a\nY: b\r\n",
                                             "Content-Length: 5\r\n", "X:\x00\r\n"]))
        elif m == "leading-crlf":
            prefix = "\r\n"
        elif m == "double-space":
            sp = draw(st.sampled_from(["  ", "\t"]))
        elif m == "upgrade-header":
            headers.append(("Upgrade", "websocket"))
            if draw(st.booleans()):
                headers.append(("Connection", "Upgrade"))
        elif m == "connection-close":
            headers.append(("Connection", draw(st.sampled_from(["close", "Close", "keep-alive, close"]))))
        elif m == "keep-alive-1.0":
            headers.append(("Connection", "keep-alive"))
        elif m == "expect":
            headers.append(("Expect", draw(st.sampled_from(["100-continue", "100-Continue", "nothing"]))))
        elif m == "asterisk":
            target = "*"
        elif m == "authority-form":
            target = draw(st.sampled_from(["h:80", "a/b", "api.example.com:443"]))
        elif m == "te-in-1.0":
            version, framing = "HTTP/1.0", "te"
    body = b""
    if framing == "te":
        headers.append(("Transfer-Encoding", "chunked"))
    if framing in ("te", "te-variant"):
        body = b"".join(size_fmt.format(n=len(c)).encode() + b"\r\n" + c + chunk_end.encode() for c in chunks)
        body += b"0\r\n" + trailers.encode("latin-1") + b"\r\n"
    elif framing.startswith("cl"):
        if not any(n == "Content-Length" for n, _ in headers):
            headers.append(("Content-Length", str(len(data))))
        body = data + (b"" if framing == "cl" else b"+" if framing == "cl-long" else b"")
        if framing == "cl-short":
            body = data[:-1] if data else b""
            headers = [(n, str(len(data) + 2) if n == "Content-Length" else v) for n, v in headers]
    headers = draw(st.permutations(headers))
    lines = [f"{method}{sp}{target}{sp}{version}"] + [f"{n}{colon}{v}" for n, v in headers]
    return (prefix + eol.join(lines) + eol + eol).encode("latin-1") + body


streams = st.lists(request(), min_size=1, max_size=3).map(b"".join)

# -- the comparison ------------------------------------------------------------------

_LEADING_EMPTY_LINE = re.compile(rb"(^|\r\n\r\n)\r\n")


def _request_lines(data: bytes) -> list[bytes]:
    return [line for line in data.split(b"\r\n") if re.match(rb"^[A-Za-z]+[ \t]", line)]


#: Where the gateway may accept what h11 refuses, and the clause that allows it.
ALLOWED = {
    "leading empty line": "RFC 9112 §2.2: a server SHOULD ignore at least one empty line before the request-line",
    "whitespace in the request line": "RFC 9112 §3: recipients MAY parse the request-line on whitespace boundaries",
    "upgrade not switched": "RFC 9110 §7.8: Upgrade without the `upgrade` connection option is not acted on",
    "http/1.0 keep-alive": "RFC 9112 §9.3: an HTTP/1.0 keep-alive request may be kept open; h11 never does",
}


def _allowed_because(data: bytes, ref: Outcome) -> str | None:
    # h11 says "no request line received" exactly when a request starts with an empty
    # line (CRLF, or a bare LF: RFC 9112 §2.2 also lets a recipient take LF as a line end).
    if _LEADING_EMPTY_LINE.search(data) or ref.reason == "no request line received":
        return "leading empty line"
    for line in _request_lines(data):
        if b"  " in line or b"\t" in line:
            return "whitespace in the request line"
    if ref.reason.startswith("illegal request line") and ("  " in ref.reason or "\\t" in ref.reason):
        return "whitespace in the request line"
    return None


def _normalised(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    # h11 lower-cases the values of the framing fields it interprets.
    return [(n, v.lower() if n.lower() in ("transfer-encoding", "content-length") else v) for n, v in headers]


def _same_request(ours: Parsed, ref: Parsed) -> None:
    assert (ours.method, ours.target, ours.host) == (ref.method, ref.target, ref.host)
    assert _normalised(ours.headers) == _normalised(ref.headers)
    assert (ours.content_length, ours.chunked) == (ref.content_length, ref.chunked)
    assert ours.body == ref.body


def assert_same_or_stricter(data: bytes, ours: Outcome, ref: Outcome) -> None:
    shared = min(len(ours.requests), len(ref.requests))
    for i in range(shared):
        _same_request(ours.requests[i], ref.requests[i])
        if i < shared - 1 or ref.end not in ("closed", "upgrade"):
            assert ours.requests[i].keep_alive == ref.requests[i].keep_alive
    if len(ours.requests) > len(ref.requests):
        # We read a request h11 did not: only if h11 refused it for an allowed reason,
        # or h11 stopped because the connection must close (HTTP/1.0, Connection: close).
        if ref.end == "closed":
            last = ours.requests[len(ref.requests) - 1]
            # RFC 9112 §9.3: an HTTP/1.0 client's keep-alive may be honoured; h11 never does.
            assert last.keep_alive is False or b"keep-alive" in data.lower(), (ours, ref)
        elif ref.end == "rejected":
            assert _allowed_because(data, ref) is not None, (data, ours, ref)
        elif ref.end == "upgrade":
            # h11 pauses at any Upgrade header; the gateway switches only when Connection
            # lists `upgrade` (RFC 9110 §7.8) and otherwise goes on with HTTP/1.1, which a
            # server that does not switch must do. Never after a request it did switch on.
            assert not ours.requests[len(ref.requests) - 1].upgrade, (data, ours, ref)
        else:
            raise AssertionError(f"the gateway read a request h11 saw as {ref.end}: {data!r} {ours} {ref}")
    elif len(ours.requests) == len(ref.requests):
        if ref.end == "rejected" and ours.end not in ("rejected", "upgrade"):
            assert _allowed_because(data, ref) is not None, (data, ours, ref)
        if ref.end == "ok" and ours.end == "incomplete":
            raise AssertionError(f"the gateway waits for bytes h11 says are not part of a request: {data!r}")
    else:
        # h11 read more: we refused (stricter), or stopped at an upgrade; never "incomplete"
        # where h11 saw a whole message (that would be a different end of message).
        assert ours.end in ("rejected", "upgrade"), (data, ours, ref)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams)
@example(b"GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n")
@example(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
@example(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\nAuthorization: x\r\n\r\n")
@example(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET / HTTP/1.0\r\n\r\n")
def test_the_gateway_reads_requests_like_h11_or_more_strictly(data: bytes) -> None:
    assert_same_or_stricter(data, read_with_gateway(data), read_with_h11(data))


@settings(max_examples=300, deadline=None)
@given(streams, st.lists(st.integers(min_value=1, max_value=400), max_size=6))
def test_how_bytes_are_split_into_reads_changes_nothing(data: bytes, cuts: list[int]) -> None:
    whole = read_with_gateway(data)
    split = read_with_gateway(data, pieces=cuts)
    assert (split.end, split.status) == (whole.end, whole.status)
    assert split.requests == whole.requests


# Framing fields in trailers (Content-Length, Transfer-Encoding) are refused outright
# (tests/unit/test_http1_reader.py); every other field is dropped.
_TRAILER_VALUES = {"Host": ["evil.example"]}
TRAILER_NAMES = ["Authorization", "X-API-Key", "X-Vocelio-User", "X-Vocelio-Tenant", "Host", "Cookie", "Expect",
                 "Connection"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(TRAILER_NAMES).flatmap(lambda name: st.tuples(
           st.just(name), st.sampled_from(_TRAILER_VALUES.get(name, ["Bearer forged", "admin"])))),
           min_size=1, max_size=5),
       st.lists(st.binary(min_size=1, max_size=20), max_size=3))
def test_no_trailer_field_ever_becomes_a_header(trailers: list[tuple[str, str]], chunks: list[bytes]) -> None:
    body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks)
    fields = b"".join(f"{n}: {v}\r\n".encode() for n, v in trailers)
    data = (b"POST /u HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked\r\n\r\n" + body + b"0\r\n" + fields
            + b"\r\nGET /next HTTP/1.1\r\nHost: api\r\n\r\n")
    out = read_with_gateway(data)
    assert out.end == "ok"
    assert [r.target for r in out.requests] == ["/u", "/next"]
    first = out.requests[0]
    assert first.headers == [("Host", "api"), ("Transfer-Encoding", "chunked")]
    assert first.body == b"".join(chunks)
    assert read_with_h11(data).requests[0].body == first.body
