"""Span export (`tracing.exporter: otlp-http`) really exports: a tiny OTLP/HTTP
receiver on loopback gets the gateway's span, whose span id is the parent id the
upstream received and whose parent is the caller's span; unsampled callers pass
through without a span; a collector that is down or slow costs counted spans,
never a request. Off by default (the pass-through tests cover that)."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from tests.harness.app_fixtures import GatewayFactory, UpstreamFactory, poll, service
from tests.harness.controlplane import free_port
from vocelio_contract.config import GatewayConfig
from vocelio_proxy.lifecycle import appkeys as keys

CALLER = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class Receiver:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.url = ""

    @property
    def spans(self) -> list[dict[str, Any]]:
        return [span for body in self.requests for rs in body["resourceSpans"] for ss in rs["scopeSpans"]
                for span in ss["spans"]]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver()

    async def traces(request: web.Request) -> web.Response:
        assert request.content_type == "application/json"
        found.requests.append(await request.json())
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/v1/traces", traces)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    found.url = f"http://127.0.0.1:{runner.addresses[0][1]}/v1/traces"
    yield found
    await runner.cleanup()


async def exporting(upstream_factory: Any, gateway_factory: Any, endpoint: str, **tracing: Any) -> Any:
    up = await upstream_factory()
    return await gateway_factory(GatewayConfig(services=[service("svc", up.endpoint())]), tracing={
        "exporter": "otlp-http", "endpoint": endpoint, "export_interval_s": 0.05, **tracing})


async def forwarded(gw: Any, headers: dict[str, str]) -> str:
    status, _, body = await gw.get("/api/v1/svc/x", headers=headers)
    assert status == 200
    return str(json.loads(body)["headers"]["traceparent"])


async def test_the_gateway_span_is_exported_and_is_the_parent_the_upstream_sees(upstream_factory: UpstreamFactory,
                                                                                gateway_factory: GatewayFactory,
                                                                                receiver: Receiver) -> None:
    sink = io.BytesIO()
    up = await upstream_factory()
    gw = await gateway_factory(GatewayConfig(services=[service("svc", up.endpoint())]), access_log=True,
                               access_log_sink=sink, tracing={"exporter": "otlp-http", "endpoint": receiver.url,
                                                              "export_interval_s": 0.05, "service_name": "edge"})
    sent = await forwarded(gw, {"traceparent": CALLER, "tracestate": "rojo=1", "X-Request-ID": "span-1"})
    assert sent.startswith("00-0af7651916cd43dd8448eb211c80319c-")
    assert sent.endswith("-01")
    assert sent[36:52] != "b7ad6b7169203331"  # the gateway's own span, not the caller's
    await poll(lambda: receiver.spans, "the span reaches the receiver")
    (span,) = receiver.spans
    assert (span["traceId"], span["spanId"], span["parentSpanId"]) == (
        "0af7651916cd43dd8448eb211c80319c", sent[36:52], "b7ad6b7169203331")
    assert span["kind"] == 2
    assert span["name"] == "GET svc"
    assert span["traceState"] == "rojo=1"
    attributes = {a["key"]: a["value"] for a in span["attributes"]}
    assert attributes["http.response.status_code"] == {"intValue": "200"}
    assert attributes["vocelio.request_id"] == {"stringValue": "span-1"}
    assert int(span["endTimeUnixNano"]) >= int(span["startTimeUnixNano"]) > 0
    (resource,) = receiver.requests[0]["resourceSpans"]
    assert resource["resource"]["attributes"] == [{"key": "service.name", "value": {"stringValue": "edge"}}]
    gw.app[keys.ACCESS_LOG].flush()
    (line,) = [json.loads(x) for x in sink.getvalue().decode().splitlines() if "span-1" in x]
    assert line["span_id"] == span["spanId"]  # the log names the span the collector has


async def test_a_request_without_context_is_a_root_span(upstream_factory: UpstreamFactory,
                                                        gateway_factory: GatewayFactory, receiver: Receiver) -> None:
    gw = await exporting(upstream_factory, gateway_factory, receiver.url)
    sent = await forwarded(gw, {"traceparent": "junk"})
    await poll(lambda: receiver.spans, "the span reaches the receiver")
    (span,) = receiver.spans
    assert (span["traceId"], span["spanId"]) == (sent[3:35], sent[36:52])
    assert "parentSpanId" not in span


async def test_an_unsampled_caller_passes_through_and_records_no_span(upstream_factory: UpstreamFactory,
                                                                      gateway_factory: GatewayFactory,
                                                                      receiver: Receiver) -> None:
    gw = await exporting(upstream_factory, gateway_factory, receiver.url, sample_ratio=0.0)
    unsampled = CALLER[:-2] + "00"
    assert await forwarded(gw, {"traceparent": unsampled}) == unsampled
    assert (await forwarded(gw, {}))[-2:] == "00"  # ratio 0: traces the gateway starts are not sampled
    await forwarded(gw, {"traceparent": CALLER})  # a sampled caller is followed whatever the ratio
    await poll(lambda: receiver.spans, "the sampled span reaches the receiver")
    assert [s["parentSpanId"] for s in receiver.spans] == ["b7ad6b7169203331"]


async def test_a_collector_that_is_down_costs_counted_spans_never_a_request(upstream_factory: UpstreamFactory,
                                                                              gateway_factory: GatewayFactory) -> None:
    gw = await exporting(upstream_factory, gateway_factory, f"http://127.0.0.1:{free_port()}/v1/traces")
    for _ in range(3):
        await forwarded(gw, {})
    spans = gw.app[keys.METRICS].spans
    await poll(lambda: spans.labels("failed")._value.get() == 3, "the failed export is counted")
    assert spans.labels("exported")._value.get() == 0


async def test_the_queue_is_bounded_and_overflow_is_counted(upstream_factory: UpstreamFactory,
                                                            gateway_factory: GatewayFactory,
                                                            receiver: Receiver) -> None:
    gw = await exporting(upstream_factory, gateway_factory, receiver.url, export_interval_s=60, max_queue=2)
    for _ in range(5):
        await forwarded(gw, {})
    assert gw.app[keys.METRICS].spans.labels("dropped")._value.get() == 3
