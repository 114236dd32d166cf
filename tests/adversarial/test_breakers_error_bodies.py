"""Error bodies never name internal addresses (issue #10, item 10): a corpus of
failing upstreams (refused, reset, malformed, oversized, timed out, hanging
connects, truncated, unexpected or invalid 101s) is answered with envelopes
that say what happened and never where: no upstream address or port, no
exception class or text. The detail goes to the log, with the request id the
client was given, so an operator can still find it."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator

import pytest

from tests.harness.app_fixtures import GatewayFactory, RawUpstreamFactory, service
from tests.harness.breakers_tools import FAILURE_CORPUS, GET, LEAK_MARKERS, FailureCase
from tests.harness.hostile import raw_request, resources, settled, status_of
from vocelio_contract.config import GatewayConfig


@pytest.fixture
async def stack() -> AsyncIterator[contextlib.AsyncExitStack]:
    async with contextlib.AsyncExitStack() as s:
        yield s


@pytest.mark.parametrize("case", FAILURE_CORPUS.values(), ids=FAILURE_CORPUS.keys())
async def test_failing_upstreams_never_show_their_address_and_are_logged_with_the_request_id(
        raw_upstream: RawUpstreamFactory, gateway_factory: GatewayFactory, stack: contextlib.AsyncExitStack,
        caplog: pytest.LogCaptureFixture, case: FailureCase) -> None:
    endpoint, request, expected = await case(raw_upstream, stack)
    gw = await gateway_factory(GatewayConfig(services=[service(
        "svc", endpoint, health_check={"enabled": False}, retry={"attempts": 1},
        timeouts={"request_s": 0.5, "connect_s": 0.3})]))
    before = resources(gw.app)
    with caplog.at_level(logging.WARNING, logger="vocelio.proxy"):
        answer = await raw_request(gw.port, request, read_timeout_s=3)
    head, _, body = answer.partition(b"\r\n\r\n")
    request_id = next(line.split(b":", 1)[1].strip().decode() for line in head.split(b"\r\n")
                      if line.lower().startswith(b"x-request-id:"))
    if expected is not None:
        assert status_of(answer) == expected, answer
        envelope = json.loads(body)
        assert envelope["request_id"] == request_id
        assert envelope["status_code"] == expected
    shown = answer.decode("latin-1").replace(request_id, "")
    for marker in (*LEAK_MARKERS, str(endpoint.port)):
        assert marker not in shown, (marker, shown)
    logged = [r for r in caplog.records if getattr(r, "fields", {}).get("request_id") == request_id]
    assert logged, [r.getMessage() for r in caplog.records]
    assert any(endpoint.key == r.fields.get("endpoint") for r in logged)  # type: ignore[attr-defined]
    await settled(gw.app, before)


async def test_a_service_without_endpoints_says_so_without_internals(gateway_factory: GatewayFactory) -> None:
    gw = await gateway_factory(GatewayConfig(services=[service("svc")]))
    answer = await raw_request(gw.port, GET, read_timeout_s=2)
    assert status_of(answer) == 503
    for marker in LEAK_MARKERS:
        assert marker not in answer.decode("latin-1")
