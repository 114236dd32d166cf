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


def start_nginx(work: Path, name: str, server_block: str, workers: int = 1,
                cpu: int | None = None) -> subprocess.Popen[bytes]:
    conf = work / f"{name}.conf"
    conf.write_text(f"""worker_processes {workers};
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
    return subprocess.Popen(pinned(cpu, [nginx_bin(), "-c", str(conf), "-p", str(work)]), start_new_session=True)


def pinned(cpu: int | None, cmd: list[str]) -> list[str]:
    """`cmd` bound to one CPU (`--pin`), or as it is when `cpu` is None."""
    return cmd if cpu is None else ["taskset", "-c", str(cpu), *cmd]


def wrk(url: str, connections: int, seconds: int, cpu: int | None = None) -> dict[str, float]:
    out = subprocess.run([*pinned(cpu, ["wrk"]), "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url],
                         capture_output=True, text=True, timeout=seconds + 30, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)

    def pct(label: str) -> float:
        m = re.search(rf"\s{label}%\s+([\d.]+)(us|ms|s)", out)
        assert m, out
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    return {"rps": rps, "p50_ms": pct("50"), "p99_ms": pct("99"), "errors": float(non2xx.group(1)) if non2xx else 0}


def h2load(url: str, connections: int, streams: int, seconds: int) -> dict[str, float]:
    """One h2load run (HTTP/2: TLS with ALPN for https, prior knowledge for http)."""
    out = subprocess.run(["h2load", "-t1", f"-c{connections}", f"-m{streams}", f"-D{seconds}", "--warm-up-time=1",
                          url], capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    rps = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored",
                     out)
    latency = re.search(r"time for request:\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)", out)
    if not (rps and done and latency):
        raise SystemExit(f"h2load output not understood:\n{out}")

    def ms(value: str, unit: str) -> float:
        return float(value) / 1000 if unit == "us" else float(value) * 1000 if unit == "s" else float(value)

    return {"rps": float(rps.group(1)), "mean_ms": ms(latency.group(5), latency.group(6)),
            "max_ms": ms(latency.group(3), latency.group(4)),
            "failed": float(done.group(3)) + float(done.group(4))}


def http2_rows(seconds: int, connections: list[int], streams: int) -> None:
    """HTTP/2 rows (`--h2`): this gateway over TLS+h2 and over h2c beside nginx with TLS and
    `http2`, the same nginx backend over HTTP/1.1 behind each, h2load as the load, in one run;
    prints req/s, mean and max latency and the gateway's ratios to nginx."""
    import trustme  # dev dependency: the bench's own test certificate

    if not shutil.which("h2load"):
        raise SystemExit("h2load missing: run `make system-deps` (Debian nghttp2-client)")
    work = Path(tempfile.mkdtemp(prefix="vocelio-bench-h2-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        cert.private_key_and_cert_chain_pem.write_to_path(str(work / "both.pem"))
        cert.private_key_pem.write_to_path(str(work / "key.pem"))
        with (work / "chain.pem").open("wb") as chain:
            for blob in cert.cert_chain_pems:
                chain.write(blob.bytes())
        backend = free_port()
        procs.append(start_nginx(work, "backend", f"""server {{
    listen 127.0.0.1:{backend} backlog=4096;
    location = /health {{ return 200 "ok"; }}
    location / {{ default_type application/json; return 200 '{BODY.decode().strip()}'; }}
  }}"""))
        wait_http(f"http://127.0.0.1:{backend}/x")
        nginx_tls = free_port()
        # nginx before 1.25.1 has no `http2 on;`: the listen parameter says the same.
        version = subprocess.run([nginx_bin(), "-v"], capture_output=True, text=True).stderr
        found = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", version)
        modern = bool(found) and tuple(int(g) for g in found.groups()) >= (1, 25, 1)  # type: ignore[union-attr]
        listen = f"listen 127.0.0.1:{nginx_tls} ssl backlog=4096;" + (" http2 on;" if modern else "")
        if not modern:
            listen = f"listen 127.0.0.1:{nginx_tls} ssl http2 backlog=4096;"
        procs.append(start_nginx(work, "h2proxy", f"""upstream be {{ server 127.0.0.1:{backend}; keepalive 64; }}
  server {{
    {listen}
    ssl_certificate {work}/chain.pem;
    ssl_certificate_key {work}/key.pem;
    http2_max_concurrent_streams 128;
    location / {{ proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; }}
  }}"""))
        config = {
            "schema_version": 1,
            "services": [{"name": "bench", "prefixes": ["/api/v1/bench"], "rewrite": "/",
                          "backends": [{"name": "nginx", "endpoints": [{"address": "127.0.0.1", "port": backend}]}],
                          "health_check": {"interval_s": 2.0}}],
        }
        (work / "gateway.json").write_text(json.dumps(config))
        h2c, tls = free_port(), free_port()
        procs.append(subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "h2_gateway.py"), str(work / "gateway.json"), str(h2c), str(tls),
             str(work / "chain.pem"), str(work / "key.pem")],
            stdout=(work / "gateway.log").open("wb"), stderr=subprocess.STDOUT, start_new_session=True))
        wait_http(f"http://127.0.0.1:{h2c}/readyz")
        deadline = time.monotonic() + 20
        while subprocess.run(["curl", "-sk", "-o", "/dev/null", f"https://127.0.0.1:{nginx_tls}/x"]).returncode:
            if time.monotonic() > deadline:
                raise SystemExit("nginx (TLS, HTTP/2) did not come up")
            time.sleep(0.1)
        targets = {
            "nginx TLS+h2 proxy": f"https://127.0.0.1:{nginx_tls}/x",
            "vocelio gateway TLS+h2": f"https://127.0.0.1:{tls}/api/v1/bench/x",
            "vocelio gateway h2c": f"http://127.0.0.1:{h2c}/api/v1/bench/x",
        }
        results: dict[tuple[str, int], dict[str, float]] = {}
        for conns in connections:
            for name, url in targets.items():
                results[(name, conns)] = h2load(url, conns, streams, seconds)
        print(f"\n{'HTTP/2 target (h2load, ' + str(streams) + ' streams/conn)':40} {'conns':>5} {'req/s':>10} "
              f"{'mean ms':>8} {'max ms':>8} {'failed':>7}")
        for (name, conns), r in results.items():
            print(f"{name:40} {conns:>5} {r['rps']:>10.0f} {r['mean_ms']:>8.3f} {r['max_ms']:>8.3f} "
                  f"{r['failed']:>7.0f}")
        print()
        for conns in connections:
            ref = results[("nginx TLS+h2 proxy", conns)]
            for name in ("vocelio gateway TLS+h2", "vocelio gateway h2c"):
                mine = results[(name, conns)]
                rps, mean = mine["rps"] / ref["rps"], mine["mean_ms"] / ref["mean_ms"]
                print(f"{name} / nginx TLS+h2 proxy at {conns} connections: "
                      f"throughput x{rps:.2f}, mean latency x{mean:.2f}")
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


def main() -> None:  # noqa: C901 - one script: start each peer, measure, print, stop
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, nargs="+", default=[8, 64])
    parser.add_argument("--only", nargs="*", help="subset of targets")
    parser.add_argument("--h2", action="store_true", help="only the HTTP/2 rows (h2load: TLS+h2 and h2c vs nginx)")
    parser.add_argument("--h2-streams", type=int, default=10, help="concurrent streams per HTTP/2 connection")
    parser.add_argument("--workers-compare", action="store_true",
                        help="instead: gateway with workers 1 and 2 beside nginx with worker_processes 1 and 2")
    parser.add_argument("--pin", action="store_true",
                        help="bind every proxy under test to CPU 1 and wrk, the backend and Redis to CPU 0 "
                             "(the nearest this 2-core machine has to a load generator on another host)")
    parser.add_argument("--limit-modes", nargs="*", default=[],
                        help="also measure the Redis-limited gateway in these rate_limit.mode values "
                             "(e.g. exact lease), each beside the default-mode row")
    args = parser.parse_args()
    if args.h2:
        http2_rows(args.seconds, args.connections, args.h2_streams)
        return
    if not shutil.which("wrk"):
        raise SystemExit("wrk missing: run `make system-deps`")
    if args.workers_compare:
        workers_compare(args.seconds, args.connections)
        return
    work = Path(tempfile.mkdtemp(prefix="vocelio-bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    proxy_cpu, load_cpu = (1, 0) if args.pin else (None, None)
    try:
        backend = free_port()
        procs.append(start_nginx(work, "backend", f"""server {{
    listen 127.0.0.1:{backend} backlog=4096;
    location = /health {{ return 200 "ok"; }}
    location / {{ default_type application/json; return 200 '{BODY.decode().strip()}'; }}
  }}""", cpu=load_cpu))
        wait_http(f"http://127.0.0.1:{backend}/x")
        nginx_proxy = free_port()
        procs.append(start_nginx(work, "proxy", f"""upstream be {{ server 127.0.0.1:{backend}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{nginx_proxy} backlog=4096;
    location / {{ proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; }}
  }}""", cpu=proxy_cpu))
        minimal = free_port()
        procs.append(subprocess.Popen(pinned(proxy_cpu, [sys.executable, str(ROOT / "bench" / "minimal_proxy.py"),
                                                         str(minimal), f"http://127.0.0.1:{backend}"]),
                                      start_new_session=True))
        gateway = free_port()
        config = {
            "schema_version": 1,
            "services": [{"name": "bench", "prefixes": ["/api/v1/bench"], "rewrite": "/",
                          "backends": [{"name": "nginx", "endpoints": [{"address": "127.0.0.1", "port": backend}]}],
                          "health_check": {"interval_s": 2.0}}],
        }
        (work / "gateway.json").write_text(json.dumps(config))
        log = (work / "gateway.log").open("wb")
        procs.append(subprocess.Popen(pinned(proxy_cpu,
            [str(Path(sys.executable).parent / "vocelio-proxy"), "serve", "--config", str(work / "gateway.json"),
             "--host", "127.0.0.1", "--port", str(gateway)]),
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        # The same gateway with a tier on Redis (limit far above the load, so every request is decided, none refused).
        redis_port, limited = free_port(), free_port()
        procs.append(subprocess.Popen(pinned(load_cpu, [shutil.which("redis-server") or "/usr/bin/redis-server",
                                                        "--port", str(redis_port), "--bind", "127.0.0.1", "--save",
                                                        "", "--appendonly", "no"]),
                                      stdout=subprocess.DEVNULL, start_new_session=True))
        limited_config = dict(config, rate_tiers=[{"name": "anonymous", "requests": 10**9, "window_s": 3600,
                                                   "key_by": "ip", "match": {"kind": "anonymous"}}])
        (work / "limited.json").write_text(json.dumps(limited_config))
        (work / "limited-settings.yaml").write_text(f"redis_url: redis://127.0.0.1:{redis_port}/0\n")
        procs.append(subprocess.Popen(pinned(proxy_cpu,
            [str(Path(sys.executable).parent / "vocelio-proxy"), "serve", "--config", str(work / "limited.json"),
             "--settings", str(work / "limited-settings.yaml"), "--host", "127.0.0.1", "--port", str(limited)]),
            stdout=(work / "limited.log").open("wb"), stderr=subprocess.STDOUT, start_new_session=True))
        # One more Redis-limited gateway per mode asked for (same Redis, its own key prefix).
        by_mode: dict[str, int] = {}
        for mode in args.limit_modes:
            by_mode[mode] = free_port()
            (work / f"limited-{mode}.yaml").write_text(
                f"redis_url: redis://127.0.0.1:{redis_port}/0\nrate_limit: {{mode: {mode}, key_prefix: b{mode}}}\n")
            procs.append(subprocess.Popen(pinned(proxy_cpu,
                [str(Path(sys.executable).parent / "vocelio-proxy"), "serve", "--config", str(work / "limited.json"),
                 "--settings", str(work / f"limited-{mode}.yaml"), "--host", "127.0.0.1", "--port",
                 str(by_mode[mode])]),
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
                wrk(url, conns, 2, load_cpu)  # warm-up: connection pools, JIT-free but caches
                results[(name, conns)] = wrk(url, conns, args.seconds, load_cpu)
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
            nginx_p = results.get(("nginx reverse proxy", conns))
            if nginx_p:
                # The performance issue's bar: the gateway's p50 beyond nginx's own proxy p50.
                print(f"gateway p50 beyond nginx reverse proxy p50 at {conns} connections: "
                      f"{gw['p50_ms'] - nginx_p['p50_ms']:+.3f} ms")
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
    if shutil.which("h2load") and (not args.only or any("h2" in o for o in args.only)):
        http2_rows(args.seconds, args.connections, args.h2_streams)


def workers_compare(seconds: int, connections: list[int]) -> None:
    """Throughput of the gateway with `workers` 1 and 2 beside nginx with `worker_processes`
    1 and 2, in one run, same backend and load (docs/operations/workers.md). The 2-worker
    gateway runs under its supervisor, scraped nowhere during the load."""
    work = Path(tempfile.mkdtemp(prefix="vocelio-bench-workers-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        backend = free_port()
        procs.append(start_nginx(work, "backend", f"""server {{
    listen 127.0.0.1:{backend} backlog=4096;
    location = /health {{ return 200 "ok"; }}
    location / {{ default_type application/json; return 200 '{BODY.decode().strip()}'; }}
  }}"""))
        wait_http(f"http://127.0.0.1:{backend}/x")
        config = {
            "schema_version": 1,
            "services": [{"name": "bench", "prefixes": ["/api/v1/bench"], "rewrite": "/",
                          "backends": [{"name": "nginx", "endpoints": [{"address": "127.0.0.1", "port": backend}]}],
                          "health_check": {"interval_s": 2.0}}],
        }
        (work / "gateway.json").write_text(json.dumps(config))
        targets: dict[str, str] = {}
        for count in (1, 2):
            port = free_port()
            upstream = f"upstream be {{ server 127.0.0.1:{backend}; keepalive 64; }}"
            procs.append(start_nginx(work, f"proxy{count}", f"""{upstream}
  server {{
    listen 127.0.0.1:{port} backlog=4096 reuseport;
    location / {{ proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; }}
  }}""", workers=count))
            targets[f"nginx worker_processes {count}"] = f"http://127.0.0.1:{port}/x"
        for count in (1, 2):
            port, admin = free_port(), free_port()
            (work / f"settings{count}.yaml").write_text(f"admin: {{port: {admin}}}\nshutdown_delay_s: 0\n")
            procs.append(subprocess.Popen(
                [str(Path(sys.executable).parent / "vocelio-proxy"), "serve", "--config", str(work / "gateway.json"),
                 "--settings", str(work / f"settings{count}.yaml"), "--host", "127.0.0.1", "--port", str(port),
                 "--workers", str(count)],
                stdout=(work / f"gateway{count}.log").open("wb"), stderr=subprocess.STDOUT, start_new_session=True))
            wait_http(f"http://127.0.0.1:{admin}/readyz")
            targets[f"vocelio gateway workers {count}"] = f"http://127.0.0.1:{port}/api/v1/bench/x"
        for url in targets.values():
            wait_http(url)
        results: dict[tuple[str, int], dict[str, float]] = {}
        for conns in connections:
            for name, url in targets.items():
                wrk(url, conns, 2)  # warm-up
                results[(name, conns)] = wrk(url, conns, seconds)
        print(f"\n{'target':32} {'conns':>5} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}")
        for (name, conns), r in results.items():
            print(f"{name:32} {conns:>5} {r['rps']:>10.0f} {r['p50_ms']:>8.3f} {r['p99_ms']:>8.3f} {r['errors']:>8.0f}")
        print()
        for conns in connections:
            for kind in ("vocelio gateway workers", "nginx worker_processes"):
                one, two = results[(f"{kind} 1", conns)], results[(f"{kind} 2", conns)]
                print(f"{kind} 2 / 1 at {conns} connections: throughput x{two['rps'] / one['rps']:.2f}")
            for count in (1, 2):
                gw, ng = results[(f"vocelio gateway workers {count}", conns)], \
                    results[(f"nginx worker_processes {count}", conns)]
                print(f"gateway / nginx with {count} worker(s) at {conns} connections: x{gw['rps'] / ng['rps']:.2f}")
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
