"""The active health checker: one background task per proxy process that sends
HTTP checks to every endpoint on its service's interval and feeds the results
to the pure health state. Owned by the application's cleanup context."""

from __future__ import annotations

import asyncio
import logging
import time

from vocelio_contract.config import HealthCheck
from vocelio_proxy.policy.health import EndpointState, record_active_check
from vocelio_proxy.process.state import GatewayState
from vocelio_proxy.wire.upstream import UpstreamError, UpstreamPool, request_head

log = logging.getLogger("vocelio.proxy.health")

_TICK_S = 0.1
_CONCURRENCY = 64


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


async def run_health_checks(state: GatewayState, pool: UpstreamPool) -> None:
    """Run until cancelled. Sets `state.health_round_done` after the first full round."""
    due: dict[tuple[str, str, str], float] = {}
    semaphore = asyncio.Semaphore(_CONCURRENCY)

    async def one(service_id: str, ep: EndpointState, hc: HealthCheck) -> None:
        async with semaphore:
            ok, error = await check_endpoint(pool, ep, hc)
        if record_active_check(ep, ok, hc, error):
            log.warning("endpoint health changed", extra={"fields": {
                "service": service_id, "endpoint": ep.key, "healthy": ep.active_healthy, "error": error}})

    running: set[asyncio.Task[None]] = set()
    scheduled_for = None
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
                round_tasks = []
                for sid, svc in rt.services.items():
                    hc = svc.service.health_check
                    for ep in svc.balancer.endpoints():
                        if not hc.enabled:
                            ep.active_healthy, ep.checked = True, True
                            continue
                        key = (sid, ep.backend, ep.key)
                        if due.get(key, 0.0) > now:
                            continue
                        due[key] = now + hc.interval_s
                        task = asyncio.create_task(one(sid, ep, hc))
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
