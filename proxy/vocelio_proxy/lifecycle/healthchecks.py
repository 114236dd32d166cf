"""The active health checker: one background task per proxy process that sends
HTTP checks to every endpoint on its service's interval and feeds the results
to the pure health state; endpoints of h2c services are checked over h2c (the
gRPC health checking protocol, or an HTTP/2 GET). Owned by the application's
cleanup context."""

from __future__ import annotations

import asyncio
import logging
import time

from vocelio_contract.config import HealthCheck
from vocelio_proxy.policy.health import EndpointState, record_active_check
from vocelio_proxy.process.state import GatewayState
from vocelio_proxy.wire.h2c_upstream import H2cPool, request_headers
from vocelio_proxy.wire.upstream import UpstreamError, UpstreamPool, request_head

log = logging.getLogger("vocelio.proxy.health")

_TICK_S = 0.1
_CONCURRENCY = 64
_SWEEP_S = 5.0


async def check_endpoint(pool: UpstreamPool, ep: EndpointState, hc: HealthCheck) -> tuple[bool, str]:
    host, port = ep.endpoint.address, ep.endpoint.port
    started = time.perf_counter()
    conn = None
    try:
        async with asyncio.timeout(hc.timeout_s):
            conn = await pool.acquire(host, port, hc.timeout_s)
            head = request_head("GET", hc.path, f"{host}:{port}",
                                [("User-Agent", "vocelio-health/1"), ("Accept", "*/*")], 0)
            response = await conn.start_request(head, "GET", hc.timeout_s)
            async for _ in conn.iter_body(hc.timeout_s):
                pass
    except TimeoutError:
        if conn is not None:
            conn.abort()
        return False, f"timed out after {hc.timeout_s}s"
    except UpstreamError as exc:
        if conn is not None:
            conn.abort()
        return False, str(exc)
    finally:
        ep.last_check_ms = round((time.perf_counter() - started) * 1000, 3)
    pool.release(conn)
    if response.status in hc.expected_statuses:
        return True, ""
    return False, f"status {response.status}"


#: The gRPC health checking protocol's method (grpc/doc/health-checking.md).
GRPC_HEALTH_CHECK = "/grpc.health.v1.Health/Check"
#: An empty `HealthCheckRequest` (service "": the server as a whole), as one gRPC message.
_GRPC_HEALTH_REQUEST = b"\x00\x00\x00\x00\x00"
#: `HealthCheckResponse{status: SERVING}` as one gRPC message (field 1, varint 1).
_GRPC_SERVING = b"\x00\x00\x00\x00\x02\x08\x01"


async def check_h2c_endpoint(pool: H2cPool, ep: EndpointState, hc: HealthCheck) -> tuple[bool, str]:
    """One active check over h2c: with `path` `/grpc.health.v1.Health/Check`, the gRPC
    health checking protocol (healthy when the answer is SERVING with grpc-status 0);
    any other path is a GET judged by `expected_statuses` like an HTTP/1.1 check."""
    host, port = ep.endpoint.address, ep.endpoint.port
    grpc = hc.path == GRPC_HEALTH_CHECK
    method = "POST" if grpc else "GET"
    fields = [("user-agent", "vocelio-health/1")]
    fields += [("content-type", "application/grpc"), ("te", "trailers")] if grpc else [("accept", "*/*")]
    started = time.perf_counter()
    stream = None
    try:
        async with asyncio.timeout(hc.timeout_s):
            stream = await pool.open_stream(host, port, request_headers(method, "http", f"{host}:{port}", hc.path,
                                                                        fields), not grpc, hc.timeout_s)
            if grpc:
                await stream.send_data(_GRPC_HEALTH_REQUEST, end_stream=True)
            status, headers = await stream.response()
            body = b""
            async for chunk in stream.iter_body():
                body += chunk
                if len(body) > 4096:
                    break
    except TimeoutError:
        return False, f"timed out after {hc.timeout_s}s"
    except UpstreamError as exc:
        return False, str(exc)
    finally:
        ep.last_check_ms = round((time.perf_counter() - started) * 1000, 3)
        if stream is not None:
            stream.reset()
    if not grpc:
        return (True, "") if status in hc.expected_statuses else (False, f"status {status}")
    answer = dict(headers + (stream.trailers or []))
    code = answer.get("grpc-status")
    if status != 200 or code != "0":
        return False, f"gRPC health check answered status {status}, grpc-status {code}"
    if body != _GRPC_SERVING:
        return False, "gRPC health check: not SERVING"
    return True, ""


async def run_health_checks(state: GatewayState, pool: UpstreamPool, h2c: H2cPool | None = None) -> None:
    """Run until cancelled. Sets `state.health_round_done` after the first full round.
    Endpoints of h2c services are checked over h2c (`h2c`; without it they count as
    healthy, as with checks disabled)."""
    due: dict[tuple[str, str, str], float] = {}
    semaphore = asyncio.Semaphore(_CONCURRENCY)

    async def one(service_id: str, ep: EndpointState, hc: HealthCheck, over_h2c: bool) -> None:
        async with semaphore:
            if over_h2c and h2c is not None:
                ok, error = await check_h2c_endpoint(h2c, ep, hc)
            else:
                ok, error = await check_endpoint(pool, ep, hc)
        if record_active_check(ep, ok, hc, error):
            log.warning("endpoint health changed", extra={"fields": {
                "service": service_id, "endpoint": ep.key, "healthy": ep.active_healthy, "error": error}})

    running: set[asyncio.Task[None]] = set()
    scheduled_for = None
    swept_at = time.monotonic()
    try:
        while True:
            rt = state.runtime
            if rt is not None and rt is not scheduled_for:
                # A new config: forget endpoints it no longer has, or the schedule grows with pod churn.
                live = {(sid, ep.backend, ep.key)
                        for sid, svc in rt.services.items() for ep in svc.balancer.endpoints()}
                for key in [k for k in due if k not in live]:
                    del due[key]
                scheduled_for = rt
            if rt is not None:
                now = time.monotonic()
                if h2c is not None and now - swept_at >= _SWEEP_S:
                    # h2c connections to endpoints that are gone, or idle too long.
                    swept_at = now
                    h2c.sweep()
                round_tasks = []
                for sid, svc in rt.services.items():
                    hc = svc.service.health_check
                    over_h2c = svc.service.upstream_protocol == "h2c"
                    for ep in svc.balancer.endpoints():
                        if not hc.enabled or (over_h2c and h2c is None):
                            ep.active_healthy, ep.checked = True, True
                            continue
                        key = (sid, ep.backend, ep.key)
                        if due.get(key, 0.0) > now:
                            continue
                        due[key] = now + hc.interval_s
                        task = asyncio.create_task(one(sid, ep, hc, over_h2c))
                        running.add(task)
                        task.add_done_callback(running.discard)
                        round_tasks.append(task)
                if not state.health_round_done:
                    await asyncio.gather(*round_tasks, return_exceptions=True)
                    state.health_round_done = True
            await asyncio.sleep(_TICK_S)
    finally:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
