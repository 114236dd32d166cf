"""Measures CPU time per request of one proxy process under a fixed wrk load
(user+system from /proc), to compare hot-path changes. A script, not a test.

Usage: cpu_per_request.py [--tier] [--redis] [vocelio-proxy serve flags...]
`--tier` adds an anonymous rate tier (decided in process); `--redis` adds it
decided on a local redis-server. Prints user and system CPU apart.

Environment: STRACE=FILE counts system calls over the run (`strace -c`); PERF=FILE
records CPU-time samples (`perf record -e cpu-clock`; PERF_HZ, PERF_CALLGRAPH such as
"--call-graph dwarf,8192" for the compiled modules' stacks); PYSPY=FILE a py-spy
profile. py-spy samples wall time, so a write() during which the proxy was preempted by
the peer it woke looks hot; perf's cpu-clock counts only CPU the proxy used."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from proxy_bench import free_port, start_nginx, wait_http, wrk  # type: ignore[import-not-found]  # a sibling script


def cpu_seconds(pid: int) -> float:
    user, system = cpu_split(pid)
    return user + system


def cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def main() -> None:
    import json
    import shutil
    import signal
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="vocelio-cpu-"))
    backend, gw = free_port(), free_port()
    procs = [start_nginx(work, "backend", f"""server {{ listen 127.0.0.1:{backend};
      location / {{ default_type application/json; return 200 '{{"ok":true}}'; }} }}""")]
    try:
        wait_http(f"http://127.0.0.1:{backend}/")
        config: dict[str, object] = {"services": [{"name": "b", "prefixes": ["/b"], "rewrite": "/",
            "backends": [{"name": "n", "endpoints": [{"address": "127.0.0.1", "port": backend}]}]}]}
        extra = sys.argv[1:]
        env = dict(os.environ)
        if "--tier" in extra:
            extra.remove("--tier")
            config["rate_tiers"] = [{"name": "anonymous", "requests": 10**9, "window_s": 3600,
                                     "key_by": "ip", "match": {"kind": "anonymous"}}]
        if "--redis" in extra:
            extra.remove("--redis")
            redis_port = free_port()
            procs.append(subprocess.Popen([shutil.which("redis-server") or "/usr/bin/redis-server", "--port",
                                           str(redis_port), "--bind", "127.0.0.1", "--save", "",
                                           "--appendonly", "no"], stdout=subprocess.DEVNULL, start_new_session=True))
            config["rate_tiers"] = [{"name": "anonymous", "requests": 10**9, "window_s": 3600,
                                     "key_by": "ip", "match": {"kind": "anonymous"}}]
            env["VOCELIO_REDIS_URL"] = f"redis://127.0.0.1:{redis_port}/0"
        (work / "gw.json").write_text(json.dumps(config))
        cmd = [str(Path(sys.executable).parent / "vocelio-proxy"), "serve", "--config", str(work / "gw.json"),
               "--host", "127.0.0.1", "--port", str(gw), *extra]
        proc = subprocess.Popen(cmd, stdout=(work / "log").open("wb"), stderr=subprocess.STDOUT,
                                start_new_session=True, env=env)
        procs.append(proc)
        wait_http(f"http://127.0.0.1:{gw}/readyz")
        wrk(f"http://127.0.0.1:{gw}/b/x", 64, 2)
        spy = None
        if os.environ.get("PYSPY"):
            spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "-p", str(proc.pid),
                                    "-d", "5", "-f", "raw", "-o", os.environ["PYSPY"], "-r", "250"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        trace: subprocess.Popen[bytes] | None = None
        if os.environ.get("STRACE"):  # syscalls per request: `strace -c` over the run (slows the proxy)
            trace = subprocess.Popen(["strace", "-c", "-f", "-o", os.environ["STRACE"], "-p", str(proc.pid)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)  # strace attaches before the counted run
        if os.environ.get("PERF"):  # CPU-time samples (py-spy samples wall time: a preempted write looks hot)
            callgraph = os.environ.get("PERF_CALLGRAPH", "-g").split()  # e.g. "--call-graph dwarf,8192"
            trace = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-F", os.environ.get("PERF_HZ", "2000"),
                                      *callgraph, "-o", os.environ["PERF"], "-p", str(proc.pid)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)  # perf attaches before the counted run
        (user0, sys0), t0 = cpu_split(proc.pid), time.monotonic()
        r = wrk(f"http://127.0.0.1:{gw}/b/x", 64, 6)
        if spy:
            spy.wait(timeout=30)
        if trace:
            trace.send_signal(signal.SIGINT)
            trace.wait(timeout=30)
            print(f"requests {r['rps'] * (time.monotonic() - t0):.0f} (strace summary or perf data: "
                  f"{os.environ.get('STRACE') or os.environ.get('PERF')})")
        (user1, sys1), wall = cpu_split(proc.pid), time.monotonic() - t0
        used, requests = (user1 - user0) + (sys1 - sys0), r["rps"] * wall
        print(f"req/s {r['rps']:.0f}  p50 {r['p50_ms']:.2f} ms  cpu {100 * used / wall:.0f}%  "
              f"cpu/request {1e6 * used / requests:.0f} us (user {1e6 * (user1 - user0) / requests:.0f}, "
              f"system {1e6 * (sys1 - sys0) / requests:.0f})")
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
