"""3,000 idle client connections held open, then requests still succeed quickly:
a fresh connection's GET and a GET on a sample of the idle connections each
answer 200 well within a second; nothing is lost. The count is scaled down
(and printed) when the process's file-descriptor limit cannot hold both ends
of every connection (the gateway runs in the test process)."""

from __future__ import annotations

import asyncio
import os
import resource
import time

from tests.harness.app_fixtures import GatewayFactory, UpstreamFactory, service
from tests.harness.hostile import resources, settled
from vocelio_contract.config import GatewayConfig

IDLE = 3_000
SAMPLE = 100
SLOW_S = 1.0


def idle_count() -> int:
    """How many connections the descriptor limit allows (raising the soft limit if it may)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 2 * IDLE + 512  # both ends in this process, plus headroom
    if soft < want and (hard == resource.RLIM_INFINITY or hard >= want):
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        soft = want
    return min(IDLE, (soft - 512) // 2)


async def get_on(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str) -> int:
    writer.write(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    await reader.readexactly(length)
    return int(head.split(b" ", 2)[1])


async def test_three_thousand_idle_connections_do_not_slow_a_request(upstream_factory: UpstreamFactory,
                                                                     gateway_factory: GatewayFactory) -> None:
    limits = resource.getrlimit(resource.RLIMIT_NOFILE)
    count = idle_count()
    up = await upstream_factory()
    gw = await gateway_factory(GatewayConfig(services=[service("svc", up.endpoint())]))
    before = resources(gw.app)
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        opened = time.monotonic()
        for start in range(0, count, 250):
            conns += await asyncio.gather(*(asyncio.open_connection("127.0.0.1", gw.port)
                                            for _ in range(start, min(count, start + 250))))
        opened_s = time.monotonic() - opened
        assert len(os.listdir("/proc/self/fd")) >= before.fds + 2 * count - 16  # both ends are open

        started = time.monotonic()
        status, _, _ = await gw.get("/api/v1/svc/x")
        fresh_s = time.monotonic() - started
        assert status == 200

        lost = failed = slow = 0
        for reader, writer in conns[:: max(1, count // SAMPLE)][:SAMPLE]:
            began = time.monotonic()
            try:
                code = await asyncio.wait_for(get_on(reader, writer, "/api/v1/svc/x"), 5)
            except (OSError, asyncio.IncompleteReadError, TimeoutError):
                lost += 1
                continue
            failed += code >= 500
            slow += time.monotonic() - began > SLOW_S
        print(f"\n{count} idle connections opened in {opened_s:.2f}s; fresh GET {fresh_s * 1000:.1f} ms; "
              f"{SAMPLE} GETs on idle connections: lost={lost} failed={failed} slow={slow}")
        assert fresh_s < SLOW_S
        assert (lost, failed, slow) == (0, 0, 0)
    finally:
        for _, writer in conns:
            writer.close()
    await settled(gw.app, before, deadline_s=10, fd_slack=8)
    resource.setrlimit(resource.RLIMIT_NOFILE, limits)
