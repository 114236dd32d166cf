"""The pure gRPC status policy: codes for the gateway's errors, the Trailers-Only
fields, grpc-message encoding and grpc-timeout parsing."""

from __future__ import annotations

import pytest

from vocelio_proxy.policy import grpc_status as gs


@pytest.mark.parametrize(("http", "code"), [
    (401, 16), (403, 7), (404, 12), (429, 8), (503, 14), (504, 4), (502, 14), (413, 8), (431, 8), (400, 13),
    (408, 4), (500, 13), (418, 2),
])
def test_each_gateway_error_maps_to_its_grpc_status_code(http: int, code: int) -> None:
    assert gs.code_for_http(http) == code


@pytest.mark.parametrize(("content_type", "grpc"), [
    ("application/grpc", True), ("application/grpc+proto", True), ("Application/GRPC; charset=x", True),
    ("application/grpc-web+proto", True), ("application/grpcx", False), ("application/json", False),
    ("", False), (None, False), ("application/grp", False),
])
def test_only_grpc_content_types_are_grpc(content_type: str | None, grpc: bool) -> None:
    assert gs.is_grpc(content_type) is grpc


def test_a_trailers_only_answer_carries_the_code_and_the_percent_encoded_message() -> None:
    fields = dict(gs.trailers_only(429, "Rate limit 100% reached\n é", retry_after=2.5))
    assert fields == {"content-type": "application/grpc", "grpc-status": "8",
                      "grpc-message": "Rate limit 100%25 reached%0A %C3%A9", "grpc-retry-pushback-ms": "2500"}


def test_a_long_message_is_bounded() -> None:
    assert len(gs.encode_message("x" * 100_000)) <= 1024


@pytest.mark.parametrize(("value", "seconds"), [
    ("1S", 1.0), ("250m", 0.25), ("2M", 120.0), ("1H", 3600.0), ("99999999u", 99.999999), ("5n", 5e-9),
    ("", None), ("S", None), ("1x", None), ("123456789S", None), ("-1S", None), ("1.5S", None), ("٣S", None),
])
def test_grpc_timeout_values_parse_only_in_the_spec_grammar(value: str, seconds: float | None) -> None:
    got = gs.parse_timeout(value)
    assert got == pytest.approx(seconds) if seconds is not None else got is None


def test_a_deadline_is_written_in_milliseconds_rounded_up_and_within_eight_digits() -> None:
    assert gs.format_timeout(0.0101) == "11m"
    assert gs.format_timeout(0) == "1m"
    assert gs.format_timeout(10**7) == "10000000S"
    assert gs.parse_timeout(gs.format_timeout(3600.0)) == pytest.approx(3600.0)


@pytest.mark.parametrize(("fields", "problem"), [
    ([("grpc-status", "0")], None),
    ([("grpc-status", "13"), ("grpc-message", "x")], None),
    ([("Grpc-Status", "16")], None),
    ([], "missing"),
    ([("grpc-message", "no status")], "missing"),
    ([("grpc-status", "0"), ("grpc-status", "13")], "repeated"),
    ([("grpc-status", "banana")], "invalid"),
    ([("grpc-status", "")], "invalid"),
    ([("grpc-status", "-1")], "invalid"),
    ([("grpc-status", "1234")], "invalid"),
    ([("grpc-status", "٣")], "invalid"),
])
def test_an_upstream_status_counts_only_when_it_is_one_number(fields: list[tuple[str, str]],
                                                              problem: str | None) -> None:
    assert gs.status_problem(fields) == problem


def test_a_replaced_status_keeps_the_other_trailers_and_drops_the_old_status_and_message() -> None:
    fields = [("grpc-status", "banana"), ("grpc-message", "old"), ("x-trace", "1")]
    assert gs.replace_status(fields, gs.INTERNAL, "bad status") == [
        ("x-trace", "1"), ("grpc-status", "13"), ("grpc-message", "bad status")]
