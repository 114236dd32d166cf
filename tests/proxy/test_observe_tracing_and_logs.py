"""W3C trace context passes through the gateway unchanged when it is valid (the
gateway exports no span, so it must not invent a parent), a malformed one
starts a new trace and never reaches the upstream, and the access log carries
the trace ids, the user agent (cut, escaped), the bytes each way and the
caller (user, tenant, key id), never a credential; `log_format: text` writes
a human-readable line. A real gateway in-process, real upstreams on loopback."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.harness.app_fixtures import GatewayFactory, UpstreamFactory, poll, service
from tests.harness.hostile import raw_request
from vocelio_contract.apikeys import mint_key
from vocelio_contract.config import GatewayConfig
from vocelio_proxy.lifecycle import appkeys as keys
from vocelio_proxy.policy.tracecontext import valid_traceparent

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
STATE = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
NEW_TRACE = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01")


async def one_service(upstream_factory: Any, gateway_factory: Any, **settings: Any) -> tuple[Any, Any]:
    up = await upstream_factory()
    gw = await gateway_factory(GatewayConfig(services=[service("svc", up.endpoint())]), **settings)
    return gw, up


async def sent_upstream(gw: Any, headers: Any) -> dict[str, str]:
    status, _, body = await gw.get("/api/v1/svc/x", headers=headers)
    assert status == 200
    return dict(json.loads(body)["headers"])


async def test_a_valid_traceparent_and_tracestate_reach_the_upstream_unchanged(upstream_factory: UpstreamFactory,
                                                                              gateway_factory: GatewayFactory) -> None:
    gw, _ = await one_service(upstream_factory, gateway_factory)
    sent = await sent_upstream(gw, {"traceparent": PARENT, "tracestate": STATE})
    assert sent["traceparent"] == PARENT
    assert sent["tracestate"] == STATE
    later = "cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-0a1b"
    assert (await sent_upstream(gw, {"traceparent": later}))["traceparent"] == later  # a future version


@pytest.mark.parametrize("bad", [
    "00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01",  # upper-case hex
    "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",  # version ff is invalid
    "00-00000000000000000000000000000000-b7ad6b7169203331-01",  # all-zero trace id
    "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",  # all-zero parent id
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",  # version 00 has four fields
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333-01",  # short parent id
    "0af7651916cd43dd8448eb211c80319c",
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0g",
    "cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01.x",
])
async def test_a_malformed_traceparent_starts_a_new_trace_and_drops_its_state(upstream_factory: UpstreamFactory,
                                                                              gateway_factory: GatewayFactory,
                                                                              bad: str) -> None:
    gw, _ = await one_service(upstream_factory, gateway_factory)
    sent = await sent_upstream(gw, {"traceparent": bad, "tracestate": STATE})
    assert NEW_TRACE.fullmatch(sent["traceparent"]), sent["traceparent"]
    assert "0af7651916cd43dd8448eb211c80319c" not in sent["traceparent"].lower()
    assert "tracestate" not in {k.lower() for k in sent}


async def test_two_traceparent_headers_are_not_one_context(upstream_factory: UpstreamFactory,
                                                           gateway_factory: GatewayFactory) -> None:
    gw, _ = await one_service(upstream_factory, gateway_factory)
    other = "00-1af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    sent = await sent_upstream(gw, [("traceparent", PARENT), ("traceparent", other)])
    assert NEW_TRACE.fullmatch(sent["traceparent"])
    assert sent["traceparent"] not in (PARENT, other)


@pytest.mark.parametrize("state", ["a=1,b", "UPPER=1", "a=" + "x" * 600, ",".join(f"k{i}=v" for i in range(33))])
async def test_a_malformed_tracestate_is_dropped_and_the_parent_kept(upstream_factory: UpstreamFactory,
                                                                     gateway_factory: GatewayFactory,
                                                                     state: str) -> None:
    gw, _ = await one_service(upstream_factory, gateway_factory)
    sent = await sent_upstream(gw, {"traceparent": PARENT, "tracestate": state})
    assert sent["traceparent"] == PARENT
    assert "tracestate" not in {k.lower() for k in sent}


async def test_the_trace_is_the_same_on_every_retry_and_without_a_caller_context_it_is_valid(
        upstream_factory: UpstreamFactory, gateway_factory: GatewayFactory) -> None:
    gw, _ = await one_service(upstream_factory, gateway_factory)
    first = (await sent_upstream(gw, {}))["traceparent"]
    second = (await sent_upstream(gw, {}))["traceparent"]
    assert valid_traceparent(first)
    assert valid_traceparent(second)
    assert first[3:35] != second[3:35]


async def access_lines(gw: Any, sink: io.BytesIO, request_id: str) -> list[str]:
    await poll(lambda: gw.app[keys.METRICS].in_flight_count == 0, "the request ended")
    gw.app[keys.ACCESS_LOG].flush()
    return [line for line in sink.getvalue().decode().splitlines() if request_id in line]


async def test_the_access_log_has_trace_ids_user_agent_bytes_and_the_caller_never_the_key(
        upstream_factory: UpstreamFactory, gateway_factory: GatewayFactory, tmp_path: Path) -> None:
    key, record = mint_key(name="ci", tenant="acme", tier="premium")
    keys_file = tmp_path / "keys.json"
    keys_file.write_text("[" + record.model_dump_json() + "]")
    up = await upstream_factory()
    sink = io.BytesIO()
    gw = await gateway_factory(GatewayConfig(services=[service("svc", up.endpoint(), auth={"mode": "api-key"})]),
                               access_log_sink=sink, access_log=True, api_keys_path=keys_file)
    agent = 'curl/8.0\t"quoted" \\ ' + "A" * 400  # tab, quote, backslash: what the wire lets through
    body = b"x" * 1000
    request = (b"POST /api/v1/svc/x HTTP/1.1\r\nHost: a\r\ntraceparent: " + PARENT.encode()
               + b"\r\nUser-Agent: " + agent.encode() + b"\r\nX-API-Key: " + key.encode()
               + b"\r\nX-Request-ID: log-1\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n" + body)
    answer = await raw_request(gw.port, request)
    assert answer.startswith(b"HTTP/1.1 200 ")
    (line,) = await access_lines(gw, sink, "log-1")
    entry = json.loads(line)
    assert (entry["trace_id"], entry["span_id"]) == ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")
    assert entry["user_agent"] == agent[:256]
    assert "\t" not in line
    assert entry["bytes_received"] == len(request)
    assert entry["bytes_sent"] == len(answer)
    assert entry["tenant"] == "acme"
    assert entry["key_id"] == record.id
    assert entry["auth"] == "api-key"
    assert key not in line
    # The secret is what follows `voc_<id>_`; it may itself hold `_`, so it is cut by the id, not split.
    secret = key.removeprefix(f"voc_{record.id}_")
    assert len(secret) >= 32
    assert secret not in line


async def test_the_access_log_counts_exact_bytes(upstream_factory: UpstreamFactory,
                                                 gateway_factory: GatewayFactory) -> None:
    """The bytes are what crossed the client connection: the request head and body, the
    answer's head and body."""
    sink = io.BytesIO()
    gw, _ = await one_service(upstream_factory, gateway_factory, access_log_sink=sink, access_log=True)
    request = (b"POST /api/v1/svc/x HTTP/1.1\r\nHost: a\r\nX-Request-ID: bytes-1\r\nContent-Length: 5\r\n"
               b"Connection: close\r\n\r\nhello")
    answer = await raw_request(gw.port, request)
    (line,) = await access_lines(gw, sink, "bytes-1")
    entry = json.loads(line)
    assert entry["bytes_received"] == len(request)
    assert entry["bytes_sent"] == len(answer)


async def test_the_text_format_is_one_readable_escaped_line(upstream_factory: UpstreamFactory,
                                                            gateway_factory: GatewayFactory) -> None:
    sink = io.BytesIO()
    gw, _ = await one_service(upstream_factory, gateway_factory, access_log_sink=sink, access_log=True,
                              log_format="text")
    await raw_request(gw.port, b"GET /api/v1/svc/x HTTP/1.1\r\nHost: a\r\nX-Request-ID: text-1\r\n"
                      b"traceparent: " + PARENT.encode() + b"\r\nUser-Agent: evil\t\"x=1\" \xc3\xa9\r\n"
                      b"Connection: close\r\n\r\n")
    (line,) = await access_lines(gw, sink, "text-1")
    assert re.match(r"\d\d:\d\d:\d\d access GET /api/v1/svc/x 200 [0-9.]+ms service=svc ", line), line
    assert "trace_id=0af7651916cd43dd8448eb211c80319c span_id=b7ad6b7169203331" in line
    assert 'user_agent="evil\\t\\"x=1\\" \\u00c3\\u00a9"' in line
    assert "\t" not in line
