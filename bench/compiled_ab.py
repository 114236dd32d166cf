"""Pure Python against the compiled hot path, side by side in one run (a script, not a test).

Starts the backend (nginx static), nginx as a reverse proxy, the minimal aiohttp proxy and two
gateways with the same config: one with `VOCELIO_COMPILED=off`, one with `VOCELIO_COMPILED=require`
(run `make compile` first). Then wrk drives each target in turn, round after round, so that a
busy neighbour on a shared machine slows every target of a round alike; the ratios are taken
within each round and their median is printed, with each gateway's CPU time per request
(from /proc). Used for docs/performance.md.

Usage: compiled_ab.py [--rounds N] [--seconds S] [--connections 8 64]"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_per_request import cpu_seconds  # type: ignore[import-not-found]  # a sibling script
from proxy_bench import BODY, ROOT, free_port, start_nginx, wait_http, wrk  # type: ignore[import-not-found]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--connections", type=int, nargs="+", default=[8, 64])
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vocelio-ab-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        backend = free_port()
        procs.append(start_nginx(work, "backend", f"""server {{
    listen 127.0.0.1:{backend} backlog=4096;
    location = /health {{ return 200 "ok"; }}
    location / {{ default_type application/json; return 200 '{BODY.decode().strip()}'; }}
  }}"""))
        wait_http(f"http://127.0.0.1:{backend}/x")
        nginx_proxy = free_port()
        procs.append(start_nginx(work, "proxy", f"""upstream be {{ server 127.0.0.1:{backend}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{nginx_proxy} backlog=4096;
    location / {{ proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; }}
  }}"""))
        minimal = free_port()
        procs.append(subprocess.Popen([sys.executable, str(ROOT / "bench" / "minimal_proxy.py"), str(minimal),
                                       f"http://127.0.0.1:{backend}"], start_new_session=True))
        config = {"schema_version": 1, "services": [{
            "name": "bench", "prefixes": ["/api/v1/bench"], "rewrite": "/",
            "backends": [{"name": "nginx", "endpoints": [{"address": "127.0.0.1", "port": backend}]}],
            "health_check": {"interval_s": 2.0}}]}
        (work / "gateway.json").write_text(json.dumps(config))
        gateways: dict[str, tuple[int, subprocess.Popen[bytes]]] = {}
        for name, mode in (("gateway, pure Python", "off"), ("gateway, compiled", "require")):
            port = free_port()
            proc = subprocess.Popen(
                [str(Path(sys.executable).parent / "vocelio-proxy"), "serve", "--config", str(work / "gateway.json"),
                 "--host", "127.0.0.1", "--port", str(port)],
                stdout=(work / f"{mode}.log").open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, "VOCELIO_COMPILED": mode})
            procs.append(proc)
            gateways[name] = (port, proc)
        wait_http(f"http://127.0.0.1:{nginx_proxy}/x")
        wait_http(f"http://127.0.0.1:{minimal}/x")
        for port, _ in gateways.values():
            wait_http(f"http://127.0.0.1:{port}/readyz")
        targets = {"nginx reverse proxy": f"http://127.0.0.1:{nginx_proxy}/x",
                   "minimal aiohttp proxy": f"http://127.0.0.1:{minimal}/x"}
        targets.update({name: f"http://127.0.0.1:{port}/api/v1/bench/x" for name, (port, _) in gateways.items()})
        rows: dict[tuple[str, int], list[dict[str, float]]] = {}
        for conns in args.connections:
            for url in targets.values():
                wrk(url, conns, 1)  # warm-up: pools, caches
            for _ in range(args.rounds):
                for name, url in targets.items():
                    gateway = gateways[name][1] if name in gateways else None
                    before, start = (cpu_seconds(gateway.pid) if gateway else 0.0), time.monotonic()
                    result = wrk(url, conns, args.seconds)
                    if gateway:
                        used, wall = cpu_seconds(gateway.pid) - before, time.monotonic() - start
                        result["cpu_us"] = 1e6 * used / (result["rps"] * wall)
                    rows.setdefault((name, conns), []).append(result)
        print(f"\n{'target':24} {'conns':>5} {'req/s (median)':>15} {'p50 ms':>8} {'p99 ms':>8} {'CPU µs/req':>11}")
        for (name, conns), results in rows.items():
            cpu = [r["cpu_us"] for r in results if "cpu_us" in r]
            print(f"{name:24} {conns:>5} {statistics.median(r['rps'] for r in results):>15.0f} "
                  f"{statistics.median(r['p50_ms'] for r in results):>8.3f} "
                  f"{statistics.median(r['p99_ms'] for r in results):>8.3f} "
                  f"{(f'{statistics.median(cpu):.0f}' if cpu else ''):>11}")
        print()
        for conns in args.connections:
            minimal_rps = [r["rps"] for r in rows[("minimal aiohttp proxy", conns)]]
            nginx_p50 = [r["p50_ms"] for r in rows[("nginx reverse proxy", conns)]]
            for name in gateways:
                runs = rows[(name, conns)]
                ratios = [r["rps"] / m for r, m in zip(runs, minimal_rps, strict=True)]
                added = [r["p50_ms"] - n for r, n in zip(runs, nginx_p50, strict=True)]
                print(f"{name} at {conns}: x{statistics.median(ratios):.2f} the minimal aiohttp proxy "
                      f"(rounds {', '.join(f'{x:.2f}' for x in ratios)}); p50 +{statistics.median(added):.3f} ms "
                      f"beyond nginx (rounds {', '.join(f'{x:+.3f}' for x in added)})")
            pure, comp = rows[("gateway, pure Python", conns)], rows[("gateway, compiled", conns)]
            gain = [c["rps"] / p["rps"] for c, p in zip(comp, pure, strict=True)]
            print(f"compiled / pure throughput at {conns}: x{statistics.median(gain):.2f} "
                  f"(rounds {', '.join(f'{x:.2f}' for x in gain)})")
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
