"""W3C trace context validation (`tracecontext`): valid values pass unchanged,
everything else starts a new trace; tracestate is bounded and well-formed."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vocelio_proxy.policy import tracecontext
from vocelio_proxy.policy.tracecontext import (
    begin_span,
    new_traceparent,
    propagate,
    valid_traceparent,
    valid_tracestate,
)

PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"


def test_a_version_00_context_passes_unchanged_with_its_flags() -> None:
    assert propagate(PARENT, "vendor=abc") == (PARENT, "vendor=abc")
    assert valid_traceparent(PARENT) == ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")


def test_version_ff_and_all_zero_ids_are_invalid() -> None:
    assert valid_traceparent("ff" + PARENT[2:]) is None
    assert valid_traceparent("00-" + "0" * 32 + PARENT[35:]) is None
    assert valid_traceparent(PARENT[:36] + "0" * 16 + "-01") is None


def test_a_later_version_may_carry_more_fields_but_not_garbage() -> None:
    assert valid_traceparent("01" + PARENT[2:] + "-ab12") is not None
    assert valid_traceparent("01" + PARENT[2:]) is not None
    assert valid_traceparent("01" + PARENT[2:] + "ab") is None  # no dash after the flags
    assert valid_traceparent("01" + PARENT[2:] + "-" + "a" * 300) is None  # bounded


def test_new_traces_are_valid_and_distinct() -> None:
    ids = {new_traceparent() for _ in range(100)}
    assert len(ids) == 100
    assert all(valid_traceparent(t) is not None and t.endswith("-01") for t in ids)


def test_an_all_zero_random_draw_still_makes_valid_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    # W3C: all-zero trace and span ids are invalid; the draw is replaced, never sent.
    monkeypatch.setattr(tracecontext, "_random_bytes", lambda n: bytes(n))
    assert valid_traceparent(new_traceparent()) is not None
    unsampled, _, _ = begin_span(None, None, sample=False)
    assert valid_traceparent(unsampled) is not None
    assert unsampled.endswith("-00")
    continued, _, parent = begin_span(PARENT[:-2] + "01", None, sample=True)
    assert valid_traceparent(continued) == (PARENT[3:35], "0000000000000001")
    assert parent == PARENT[36:52]


@given(st.text(max_size=80))
def test_whatever_the_caller_sends_the_upstream_gets_a_valid_context(value: str) -> None:
    parent, state = propagate(value, "a=1")
    assert valid_traceparent(parent) is not None
    assert parent == value or (state is None and parent != value)


def test_tracestate_members_follow_the_grammar_and_the_bounds() -> None:
    assert valid_tracestate("rojo=00f067aa0ba902b7, congo=t61rcWkgMzE,,tenant@vendor=x")
    assert not valid_tracestate("")
    assert not valid_tracestate("Rojo=1")  # keys are lower-case
    assert not valid_tracestate("a=1,b")
    assert not valid_tracestate("a=x=" + "y")
    assert not valid_tracestate(",".join(f"k{i}=v" for i in range(33)))
    assert valid_tracestate(",".join(f"k{i}=v" for i in range(32)))
    assert not valid_tracestate("a=" + "v" * 511)


def test_with_export_a_sampled_caller_gets_the_gateway_span_and_an_unsampled_one_passes() -> None:
    sampled = PARENT[:-2] + "01"
    sent, state, parent = begin_span(sampled, "a=1", sample=False)
    assert sent[:36] == sampled[:36]
    assert sent[36:52] != sampled[36:52]
    assert sent.endswith("-01")
    assert (state, parent) == ("a=1", "00f067aa0ba902b7")
    assert begin_span(PARENT, "a=1", sample=True) == (PARENT, "a=1", None)  # flags 00: not recorded
    root, state, parent = begin_span("junk", "a=1", sample=True)
    assert valid_traceparent(root)
    assert root.endswith("-01")
    assert (state, parent) == (None, "")
    unsampled, _, parent = begin_span(None, None, sample=False)
    assert valid_traceparent(unsampled)
    assert unsampled.endswith("-00")
    assert parent is None
