"""A backend process killed (SIGKILL) in the middle of a request load: the other
endpoint takes over, and with the default retry and passive-health settings no
client request fails.

Expected figure, with defaults (retry attempts 2 for idempotent methods, retry
budget floor 3/s = 30 per 10 s window, passive ejection after 5 consecutive
failures): failed = 0, lost = 0. Each GET whose attempt meets the dead endpoint
(a refused connect, a reset pooled connection, or a request in flight at the
kill) is retried once on the survivor; at most 5 connect failures happen before
the endpoint is ejected, plus at most one in-flight request per client worker,
well under the budget. Reused connections that turn out dead are retried for
free ("stale")."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

from tests.harness.app_fixtures import GatewayFactory, service
from tests.harness.hostile import resources, settled
from tests.harness.reload_tools import BackendProcess, while_loaded
from vocelio_contract.config import Endpoint, GatewayConfig

WORKERS = 8
SLOW_S = 1.0


def retries_by_reason(metrics: str) -> Counter[str]:
    out: Counter[str] = Counter()
    for line in metrics.splitlines():
        if line.startswith("vocelio_upstream_retries_total{"):
            reason = line.split('reason="', 1)[1].split('"', 1)[0]
            out[reason] += int(float(line.rsplit(" ", 1)[1]))
    return out


async def test_a_backend_killed_mid_load_costs_no_request(gateway_factory: GatewayFactory) -> None:
    a = BackendProcess("a").start()
    b = BackendProcess("b").start()
    try:
        gw = await gateway_factory(GatewayConfig(services=[service(
            "svc", Endpoint(address="127.0.0.1", port=a.port), Endpoint(address="127.0.0.1", port=b.port))]))
        before = resources(gw.app)
        served_by: Counter[str] = Counter()
        after_kill: Counter[str] = Counter()
        killed = asyncio.Event()

        def check(path: str, status: int, body: bytes) -> None:
            if status == 200:
                name = json.loads(body)["upstream"]
                (after_kill if killed.is_set() else served_by)[name] += 1

        async def scenario() -> None:
            await asyncio.sleep(1.0)
            a.kill()
            killed.set()
            await asyncio.sleep(2.0)

        stats = await while_loaded(gw.url, ["/api/v1/svc/x"], scenario, workers=WORKERS, slow_s=SLOW_S,
                                   check=check)
        metrics = (await gw.get("/metrics"))[2].decode()
        retries = retries_by_reason(metrics)
        print(f"\nbackend killed mid-load: {stats.line()}; before kill {dict(served_by)}, "
              f"after {dict(after_kill)}; retries {dict(retries)}")
        assert served_by["a"] > 0
        assert served_by["b"] > 0
        assert not stats.capped  # the load ran for the whole scenario
        assert (stats.lost, stats.failed, stats.unexpected, stats.slow) == (0, 0, 0, 0), stats.line()
        assert after_kill["b"] > 100
        # The kill was felt and absorbed by retries, within the bound stated above.
        assert sum(retries.values()) >= 1
        assert sum(n for reason, n in retries.items() if reason != "stale") <= 5 + WORKERS
        endpoint = next(e for e in json.loads((await gw.get("/status"))[2])["services"][0]["endpoints"]
                        if e["port"] == a.port)
        assert endpoint["ejected"] or not endpoint["healthy"]
        # Nothing leaked: in-flight counts back to zero; descriptors grow only by the pooled
        # keep-alive connections to the survivor (one per worker at most).
        await settled(gw.app, before, fd_slack=WORKERS + 2)
    finally:
        a.kill()
        b.kill()
