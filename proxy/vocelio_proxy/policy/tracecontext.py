"""W3C Trace Context (https://www.w3.org/TR/trace-context/) at the gateway, which
does not export spans: the caller's `traceparent` and `tracestate` are passed to
the upstream unchanged when they are valid, so the backend's spans are children
of the caller's span and a trace in Jaeger or Tempo stays whole. A gateway that
replaced the parent id with one of its own would name a span that no collector
ever receives, and break every trace it touches.

Strict validation (never forward what a backend's tracer could misread):

* version `00`: exactly `00-<32 hex>-<16 hex>-<2 hex>`, lower-case only;
* a later version (`01`..`fe`): the same first 55 characters, then nothing or
  `-` and lower-case hex or `-` (what a future version may add), 256 characters
  at most; forwarded as sent;
* version `ff`, an all-zero trace id or parent id, upper-case hex, repeated
  `traceparent` headers (joined with a comma), anything else: invalid.

An invalid or missing `traceparent` starts a new trace (random ids, sampled
flag set, as the first hop of a trace) and its `tracestate` is dropped, as the
specification requires. `tracestate` is forwarded when it is at most 512
characters of at most 32 well-formed list members, else dropped.

With span export on (`tracing.exporter: otlp-http`, off by default),
`begin_span` continues the caller's sampled context with the gateway's own span
id instead, and `tracing.SpanExporter` exports that span, so the backend's
spans are children of a span the collector receives.

Pure (no I/O); called by the proxy handler (`proxying`) once per proxied
request and by the access log (`handling`)."""

from __future__ import annotations

import random
import re

_V00 = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")
_LATER = re.compile(r"(?!ff)[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}(?:-[0-9a-f-]*)?")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
_MAX_TRACEPARENT = 256
_MAX_TRACESTATE = 512
_MAX_MEMBERS = 32
_KEY = r"(?:[a-z0-9][_0-9a-z*/-]{0,255}|[a-z0-9][_0-9a-z*/-]{0,240}@[a-z][_0-9a-z*/-]{0,13})"
_VALUE = r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]"
_MEMBER = re.compile(f"{_KEY}={_VALUE}")

# Ids from the process PRNG (see forwarding.new_request_id): not secrets. Drawn as bytes
# and hex-encoded: mypyc compiles an f-string with a format spec (`:016x`) to a
# `str.format` call that parses its template on every request, three times slower.
_random_bytes = random.randbytes


def _span_id() -> str:
    """A random non-zero span id (16 hex digits)."""
    span = _random_bytes(8).hex()
    return span if span != _ZERO_SPAN else "0000000000000001"


def _trace_and_span() -> str:
    """`trace-id-span-id` of a new trace: random, neither all zeros."""
    raw = _random_bytes(24).hex()
    trace, span = raw[:32], raw[32:]
    if trace == _ZERO_TRACE:
        trace = "0" * 31 + "1"
    if span == _ZERO_SPAN:
        span = "0000000000000001"
    return trace + "-" + span


def valid_traceparent(value: str | None) -> tuple[str, str] | None:
    """(trace id, parent id) of a valid `traceparent`, else None (module doc)."""
    if not value or len(value) > _MAX_TRACEPARENT:
        return None
    match = _V00.fullmatch(value) if value[:2] == "00" else _LATER.fullmatch(value)
    if match is None:
        return None
    trace_id, parent_id = match.group(1), match.group(2)
    if trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
        return None
    return trace_id, parent_id


def valid_tracestate(value: str | None) -> bool:
    """True for a `tracestate` the gateway forwards (module doc). Empty members (`a=1,,b=2`)
    are allowed by the specification."""
    if not value or len(value) > _MAX_TRACESTATE:
        return False
    members = [m.strip(" \t") for m in value.split(",")]
    present = [m for m in members if m]
    if not present or len(present) > _MAX_MEMBERS:
        return False
    return all(_MEMBER.fullmatch(m) for m in present)


def new_traceparent() -> str:
    """The first hop of a new trace: random non-zero ids, sampled."""
    return "00-" + _trace_and_span() + "-01"


def propagate(traceparent: str | None, tracestate: str | None) -> tuple[str, str | None]:
    """The (`traceparent`, `tracestate` or None) sent upstream for the caller's headers:
    unchanged when valid, else a new trace without the caller's state."""
    if traceparent is not None and valid_traceparent(traceparent) is not None:
        return traceparent, tracestate if valid_tracestate(tracestate) else None
    return new_traceparent(), None


def ids(traceparent: str | None) -> tuple[str, str] | None:
    """(trace id, span id) for the access log: of a valid `traceparent`, else None."""
    return valid_traceparent(traceparent)


def begin_span(traceparent: str | None, tracestate: str | None,
               sample: bool) -> tuple[str, str | None, str | None]:
    """With span export on: the (`traceparent`, `tracestate`, parent span id) of the
    gateway's own span. The caller's valid context is continued with a new span id (the
    gateway's span, exported) when the caller sampled it; an unsampled caller context
    passes through unchanged and no span is recorded (parent id None). Without a valid
    context the gateway starts a trace, sampled when `sample` (the ratio's draw); the
    parent id of a root span is ""."""
    found = valid_traceparent(traceparent) if traceparent is not None else None
    if found is not None and traceparent is not None:
        state = tracestate if valid_tracestate(tracestate) else None
        flags = traceparent[53:55]
        if not int(flags, 16) & 1:  # the caller did not sample: nothing to record, pass it on
            return traceparent, state, None
        trace_id, parent_id = found
        return f"00-{trace_id}-{_span_id()}-{flags}", state, parent_id
    if not sample:
        return "00-" + _trace_and_span() + "-00", None, None
    return new_traceparent(), None, ""
