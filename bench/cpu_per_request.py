"""Measures CPU time per request of one proxy process under a fixed wrk load
(user+system from /proc), to compare hot-path changes. A script, not a test.

Usage: cpu_per_request.py [--tier] [--redis] [vocelio-proxy serve flags...]
`--tier` adds an anonymous rate tier (decided in process); `--redis` adds it
decided on a local redis-server."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from proxy_bench import free_port, start_nginx, wait_http, wrk  # type: ignore[import-not-found]  # a sibling script


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
        before, t0 = cpu_seconds(proc.pid), time.monotonic()
        r = wrk(f"http://127.0.0.1:{gw}/b/x", 64, 6)
        if spy:
            spy.wait(timeout=30)
        used, wall = cpu_seconds(proc.pid) - before, time.monotonic() - t0
        print(f"req/s {r['rps']:.0f}  p50 {r['p50_ms']:.2f} ms  cpu {100 * used / wall:.0f}%  "
              f"cpu/request {1e6 * used / (r['rps'] * wall):.0f} us")
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
