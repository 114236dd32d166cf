"""`make bench`: throughput and latency of the gateway beside references, all
in one run on this machine with the same backend and the same load.

Backend: nginx serving a small static response. Load: wrk, fixed duration, at
8 and 64 connections. Targets: the backend directly; nginx as a reverse proxy
(one worker, upstream keep-alive); a minimal aiohttp proxy (bench/minimal_proxy.py);
and the Vocelio gateway (one process, every feature on: routing, balancing, health
checks, breaker, metrics, JSON request log to a file). Prints req/s, p50 and p99
per target and the gateway's ratios. Not a test: figures vary by machine.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BODY = b'{"status":"ok","service":"bench","items":[1,2,3,4,5,6,7,8]}\n'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, deadline_s: float = 20) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status < 500:
                    return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


def nginx_bin() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if not found:
        raise SystemExit("nginx missing: run `make system-deps`")
    return found


def start_nginx(work: Path, name: str, server_block: str) -> subprocess.Popen[bytes]:
    conf = work / f"{name}.conf"
    conf.write_text(f"""worker_processes 1;
daemon off;
pid {work}/{name}.pid;
error_log {work}/{name}.error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {work}/{name}-body;
  proxy_temp_path {work}/{name}-proxy;
  fastcgi_temp_path {work}/{name}-fcgi;
  uwsgi_temp_path {work}/{name}-uwsgi;
  scgi_temp_path {work}/{name}-scgi;
  keepalive_requests 1000000;
  {server_block}
}}
""")
    return subprocess.Popen([nginx_bin(), "-c", str(conf), "-p", str(work)], start_new_session=True)


def wrk(url: str, connections: int, seconds: int) -> dict[str, float]:
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url],
                         capture_output=True, text=True, timeout=seconds + 30, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)

    def pct(label: str) -> float:
        m = re.search(rf"\s{label}%\s+([\d.]+)(us|ms|s)", out)
        assert m, out
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    return {"rps": rps, "p50_ms": pct("50"), "p99_ms": pct("99"), "errors": float(non2xx.group(1)) if non2xx else 0}


def main() -> None:  # noqa: C901 - one script: start each peer, measure, print, stop
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, nargs="+", default=[8, 64])
    parser.add_argument("--only", nargs="*", help="subset of targets")
    parser.add_argument("--limit-modes", nargs="*", default=[],
                        help="also measure the Redis-limited gateway in these rate_limit.mode values "
                             "(e.g. exact lease), each beside the default-mode row")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk missing: run `make system-deps`")
    work = Path(tempfile.mkdtemp(prefix="vocelio-bench-"))
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
        gateway = free_port()
        config = {
            "schema_version": 1,
            "services": [{"name": "bench", "prefixes": ["/api/v1/bench"], "rewrite": "/",
                          "backends": [{"name": "nginx", "endpoints": [{"address": "127.0.0.1", "port": backend}]}],
                          "health_check": {"interval_s": 2.0}}],
        }
        (work / "gateway.json").write_text(json.dumps(config))
        log = (work / "gateway.log").open("wb")
        procs.append(subprocess.Popen(
            [str(Path(sys.executable).parent / "vocelio-proxy"), "serve", "--config", str(work / "gateway.json"),
             "--host", "127.0.0.1", "--port", str(gateway)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        # The same gateway with a tier on Redis (limit far above the load, so every request is decided, none refused).
        redis_port, limited = free_port(), free_port()
        procs.append(subprocess.Popen([shutil.which("redis-server") or "/usr/bin/redis-server", "--port",
                                       str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                                      stdout=subprocess.DEVNULL, start_new_session=True))
        limited_config = dict(config, rate_tiers=[{"name": "anonymous", "requests": 10**9, "window_s": 3600,
                                                   "key_by": "ip", "match": {"kind": "anonymous"}}])
        (work / "limited.json").write_text(json.dumps(limited_config))
        (work / "limited-settings.yaml").write_text(f"redis_url: redis://127.0.0.1:{redis_port}/0\n")
        procs.append(subprocess.Popen(
            [str(Path(sys.executable).parent / "vocelio-proxy"), "serve", "--config", str(work / "limited.json"),
             "--settings", str(work / "limited-settings.yaml"), "--host", "127.0.0.1", "--port", str(limited)],
            stdout=(work / "limited.log").open("wb"), stderr=subprocess.STDOUT, start_new_session=True))
        # One more Redis-limited gateway per mode asked for (same Redis, its own key prefix).
        by_mode: dict[str, int] = {}
        for mode in args.limit_modes:
            by_mode[mode] = free_port()
            (work / f"limited-{mode}.yaml").write_text(
                f"redis_url: redis://127.0.0.1:{redis_port}/0\nrate_limit: {{mode: {mode}, key_prefix: b{mode}}}\n")
            procs.append(subprocess.Popen(
                [str(Path(sys.executable).parent / "vocelio-proxy"), "serve", "--config", str(work / "limited.json"),
                 "--settings", str(work / f"limited-{mode}.yaml"), "--host", "127.0.0.1", "--port",
                 str(by_mode[mode])],
                stdout=(work / f"limited-{mode}.log").open("wb"), stderr=subprocess.STDOUT, start_new_session=True))
        wait_http(f"http://127.0.0.1:{nginx_proxy}/x")
        wait_http(f"http://127.0.0.1:{minimal}/x")
        wait_http(f"http://127.0.0.1:{gateway}/readyz")
        wait_http(f"http://127.0.0.1:{limited}/readyz")
        for port in by_mode.values():
            wait_http(f"http://127.0.0.1:{port}/readyz")
        targets = {
            "backend (nginx static)": f"http://127.0.0.1:{backend}/x",
            "nginx reverse proxy": f"http://127.0.0.1:{nginx_proxy}/x",
            "minimal aiohttp proxy": f"http://127.0.0.1:{minimal}/x",
            "vocelio gateway": f"http://127.0.0.1:{gateway}/api/v1/bench/x",
            "vocelio gateway + redis limit": f"http://127.0.0.1:{limited}/api/v1/bench/x",
        }
        for mode, port in by_mode.items():
            targets[f"vocelio gateway + redis limit ({mode})"] = f"http://127.0.0.1:{port}/api/v1/bench/x"
        if args.only:
            targets = {k: v for k, v in targets.items() if any(o in k for o in args.only)}
        results: dict[tuple[str, int], dict[str, float]] = {}
        for conns in args.connections:
            for name, url in targets.items():
                wrk(url, conns, 2)  # warm-up: connection pools, JIT-free but caches
                results[(name, conns)] = wrk(url, conns, args.seconds)
        print(f"\n{'target':38} {'conns':>5} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}")
        for (name, conns), r in results.items():
            print(f"{name:38} {conns:>5} {r['rps']:>10.0f} {r['p50_ms']:>8.3f} {r['p99_ms']:>8.3f} {r['errors']:>8.0f}")
        print()
        for conns in args.connections:
            gw = results.get(("vocelio gateway", conns))
            if not gw:
                continue
            for ref in ("nginx reverse proxy", "minimal aiohttp proxy"):
                ref_result = results.get((ref, conns))
                if ref_result:
                    print(f"gateway / {ref} at {conns} connections: throughput x{gw['rps'] / ref_result['rps']:.2f}")
            rl = results.get(("vocelio gateway + redis limit", conns))
            if rl:
                print(f"rate limiting on Redis costs {100 * (1 - rl['rps'] / gw['rps']):.1f}% of throughput "
                      f"at {conns} connections")
            for mode in by_mode:
                rm = results.get((f"vocelio gateway + redis limit ({mode})", conns))
                if rm:
                    print(f"rate limiting on Redis, mode {mode}, costs {100 * (1 - rm['rps'] / gw['rps']):.1f}% "
                          f"of throughput at {conns} connections")
            direct = results.get(("backend (nginx static)", conns))
            if direct:
                print(f"gateway adds {gw['p50_ms'] - direct['p50_ms']:.3f} ms to p50 at {conns} connections")
        log_lines = sum(1 for _ in (work / "gateway.log").open("rb"))
        print(f"gateway wrote {log_lines} JSON log lines during the run")
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
