"""Where the gateway's CPU per request goes, by module: py-spy (with native frames, so the
compiled modules and the kernel calls show) on one gateway process under wrk at 64 connections.
A script, not a test; figures vary by machine. Used for docs/performance.md.

  hot_path_profile.py record OUT.txt [--mode off|require] [--tier]   profile a gateway (raw py-spy output);
                                      --tier adds the bench's anonymous rate tier (decided in process)
  hot_path_profile.py table OUT.txt [CPU_US]                 the table: % of samples (µs/request)

Samples are attributed to the innermost gateway frame (Python or mypyc-compiled C), including
the standard library and C code it calls; the kernel's write()/read() rows are the system calls
themselves. Only the event-loop thread counts (the resolver and executor threads idle), and
epoll_wait is left out (waiting, not work); pass the run's CPU µs/request to get µs per row."""

from __future__ import annotations

import collections
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_per_request import cpu_seconds  # type: ignore[import-not-found]  # a sibling script
from proxy_bench import ROOT, free_port, start_nginx, wait_http, wrk  # type: ignore[import-not-found]

FRAME = re.compile(r"^(.*) \((.*?)(?::(\d+))?\)$")


def record(out: str, mode: str, tier: bool = False) -> None:
    work = Path(tempfile.mkdtemp(prefix="vocelio-prof-"))
    backend, port = free_port(), free_port()
    procs = [start_nginx(work, "backend", f"""server {{ listen 127.0.0.1:{backend};
      location / {{ default_type application/json; return 200 '{{"ok":true}}'; }} }}""")]
    try:
        wait_http(f"http://127.0.0.1:{backend}/")
        config: dict[str, object] = {"services": [{
            "name": "b", "prefixes": ["/b"], "rewrite": "/", "health_check": {"interval_s": 2.0},
            "backends": [{"name": "n", "endpoints": [{"address": "127.0.0.1", "port": backend}]}]}]}
        if tier:
            config["rate_tiers"] = [{"name": "anonymous", "requests": 10**9, "window_s": 3600,
                                     "key_by": "ip", "match": {"kind": "anonymous"}}]
        (work / "gw.json").write_text(json.dumps(config))
        proc = subprocess.Popen([str(Path(sys.executable).parent / "vocelio-proxy"), "serve", "--config",
                                 str(work / "gw.json"), "--host", "127.0.0.1", "--port", str(port)],
                                stdout=(work / "log").open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "VOCELIO_COMPILED": mode})
        procs.append(proc)
        wait_http(f"http://127.0.0.1:{port}/readyz")
        wrk(f"http://127.0.0.1:{port}/b/x", 64, 2)
        spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "-p", str(proc.pid), "-d", "6",
                                "-f", "raw", "-o", out, "-r", "200", "--native"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        before, start = cpu_seconds(proc.pid), time.monotonic()
        result = wrk(f"http://127.0.0.1:{port}/b/x", 64, 8)
        spy.wait(timeout=60)
        used, wall = cpu_seconds(proc.pid) - before, time.monotonic() - start
        per_request = 1e6 * used / (result["rps"] * wall)
        print(f"VOCELIO_COMPILED={mode}: req/s {result['rps']:.0f}, cpu/request {per_request:.0f} us")
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)


def compiled_names() -> dict[str, str]:
    """mypyc's C names carry the module's last name: `CPyDef_proxying___...` → pipeline/proxying.py."""
    modules = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["vocelio"]["compiled"]["modules"]
    return {m.rsplit(".", 1)[1]: m.split(".", 1)[1].replace(".", "/") + ".py" for m in modules}


def where(frames: list[str], native: re.Pattern[str], names: dict[str, str]) -> str:
    leaf = FRAME.match(frames[-1])
    leaf_fn, leaf_file = (leaf.group(1), leaf.group(2)) if leaf else (frames[-1], "")
    if "libc" in leaf_file and leaf_fn in ("write", "send", "sendmsg", "writev"):
        # The upstream module as a Python frame, or compiled (mypyc names its C functions `..._upstream___...`).
        side = "upstream" if any("upstream.py" in f or "_upstream___" in f for f in frames) else "client"
        return f"[kernel] write() to the {side} socket"
    if "libc" in leaf_file and leaf_fn in ("read", "recv", "recvfrom"):
        return "[kernel] read()"
    if leaf_fn.startswith("epoll"):
        return "[kernel] epoll_wait"
    for frame in reversed(frames):
        if "__native_" in frame:
            found = native.match(frame)
            if found:
                return names[found.group(1)] + " (compiled)"
        elif "vocelio_proxy/" in frame or "vocelio_contract/" in frame:
            parsed = FRAME.match(frame)
            file = parsed.group(2) if parsed else frame
            return file.split("vocelio_proxy/")[-1] if "vocelio_proxy/" in file else file
    return "[event loop] uvloop, no gateway frame"


def table(path: str, cpu_us: float | None) -> None:
    names = compiled_names()
    native = re.compile(r"^CPy[A-Za-z]*_(?:[a-z]+_)??(" + "|".join(sorted(names, key=len, reverse=True)) + r")___")
    counts: collections.Counter[str] = collections.Counter()
    for line in Path(path).read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = stack.split(";")
        if any("Runner.run" in f or "run_until_complete" in f for f in frames):
            counts[where(frames, native, names)] += int(n)
    # epoll_wait is mostly the loop waiting for work (py-spy counts it as running): left out of
    # the shares, which are of the samples doing work.
    waiting = counts.pop("[kernel] epoll_wait", 0)
    total = sum(counts.values())
    print(f"{total} working samples of the event-loop thread; {waiting} more in epoll_wait, left out")
    print("| where | % | µs/request |\n| --- | ---: | ---: |")
    for name, samples in counts.most_common():
        share = 100 * samples / total
        if share >= 0.3:
            print(f"| {name} | {share:.1f} | {f'{share * cpu_us / 100:.1f}' if cpu_us else ''} |")


def main() -> None:
    if len(sys.argv) >= 3 and sys.argv[1] == "record":
        mode = sys.argv[sys.argv.index("--mode") + 1] if "--mode" in sys.argv else "auto"
        record(sys.argv[2], mode, "--tier" in sys.argv)
    elif len(sys.argv) >= 3 and sys.argv[1] == "table":
        table(sys.argv[2], float(sys.argv[3]) if len(sys.argv) > 3 else None)
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
