"""Pod networking for the tests: each pod that must serve real traffic gets a
network namespace with a veth pair and a /30 in the fenced test range
(198.18.0.0/15), and its HTTP server runs inside that namespace. The whole
range is fenced with an `unreachable` route so a packet to an address the tests
did not create never leaves the machine. Everything the harness creates is
named `vgw-*` and removed on teardown, and leftovers of a crashed run are
removed on the next start."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from .controlplane import TEST_RANGE, HarnessError
from .waiting import poll

PREFIX = "vgw-"  # network namespaces: vgw-<pid>-<n>
LINK_PREFIXES = ("vgh", "vgp")  # veth ends: vgh<pid>-<n> (host), vgp<pid>-<n> (pod); <= 15 characters
ROOT = Path(__file__).resolve().parents[2]
# Concurrent runs on one machine (a developer's suite beside CI's, or two worktrees) must not hand out the
# same addresses: each run holds one of these slots, a block of 16 /24s, for its lifetime. Slots end below
# 198.18.200.0/24, which the real node's CNI bridge uses (tests/harness/node.py).
SLOTS = 8
SLOT_WIDTH = 16
SLOT_LOCKS = Path("/run/vocelio-podnet")


def _claim_slot() -> tuple[int, int]:
    """Lock the first free slot: (its index, the open lock's descriptor, held until the process ends)."""
    SLOT_LOCKS.mkdir(parents=True, exist_ok=True)
    for slot in range(SLOTS):
        fd = os.open(SLOT_LOCKS / f"slot-{slot}.lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return slot, fd
    raise HarnessError(f"all {SLOTS} pod-network slots are held by other runs on this machine")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and result.returncode != 0:
        raise HarnessError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


def require_netns() -> None:
    if os.geteuid() != 0:
        raise HarnessError("pod networking needs root (ip netns, veth): run the cluster tests as root")
    probe = _ip("netns", "list", check=False)
    if probe.returncode != 0:
        raise HarnessError(f"ip netns is unavailable: {probe.stderr.strip()}")


def _owner_alive(name: str) -> bool:
    """Names carry the creating process id: another live run keeps its own."""
    try:
        pid = int(name[3:].lstrip("-").split("-")[0])
    except ValueError:
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cleanup_leftovers() -> None:
    """Remove what crashed runs (or this one) left behind; leave concurrent live runs alone."""
    for line in _ip("netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.strip() else ""
        if name.startswith(PREFIX) and not _owner_alive(name):
            _ip("netns", "delete", name, check=False)
    for line in _ip("-o", "link", "show", check=False).stdout.splitlines():
        parts = line.split(":")
        link = parts[1].strip().split("@")[0] if len(parts) > 1 else ""
        if link.startswith(LINK_PREFIXES) and not _owner_alive(link):
            _ip("link", "delete", link, check=False)


def others_running() -> bool:
    return any(line.split()[0].startswith(PREFIX) and _owner_alive(line.split()[0])
               for line in _ip("netns", "list", check=False).stdout.splitlines() if line.strip())


def fence() -> None:
    """Install the unreachable route for the whole test range (idempotent)."""
    existing = _ip("route", "show", "type", "unreachable", check=False).stdout
    if TEST_RANGE not in existing:
        _ip("route", "add", "unreachable", TEST_RANGE)


def unfence() -> None:
    _ip("route", "del", "unreachable", TEST_RANGE, check=False)


@dataclass
class PodHost:
    name: str
    index: int
    netns: str
    host_if: str
    address: str
    gateway: str
    servers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def serve(self, port: int, label: str, log_dir: Path) -> None:
        """Run the test pod server inside the namespace and wait until it answers."""
        log = (log_dir / f"{self.netns}-{port}.log").open("ab")
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.netns, sys.executable, "-m", "tests.harness.podserver",
             "--host", self.address, "--port", str(port), "--name", label],
            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
        self.servers.append(proc)
        def answers() -> bool:
            if proc.poll() is not None:
                raise HarnessError(f"pod server {label} exited: {proc.returncode}")
            with urllib.request.urlopen(f"http://{self.address}:{port}/health", timeout=1):
                return True

        poll(f"pod server {label} at {self.address}:{port}", answers, 20, interval=0.1)

    def stop_servers(self) -> None:
        for proc in self.servers:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
        self.servers.clear()


class PodNetwork:
    """Allocates pod hosts: pod N gets 198.18.<16*slot + N/64>.<4*(N%64)+2>/30, its host side the .1 of
    that /30; `slot` is this run's (see `_claim_slot`)."""

    def __init__(self, log_dir: Path) -> None:
        require_netns()
        cleanup_leftovers()
        fence()
        self.log_dir = log_dir
        log_dir.mkdir(parents=True, exist_ok=True)
        self.hosts: dict[str, PodHost] = {}
        self._next = 1
        self._slot, self._slot_lock = _claim_slot()

    def create(self, name: str) -> PodHost:
        index = self._next
        self._next += 1
        extra, block = divmod(index, 64)
        if extra >= SLOT_WIDTH:
            raise HarnessError(f"more than {SLOT_WIDTH * 64 - 1} pod hosts in one run")
        third = self._slot * SLOT_WIDTH + extra
        base = block * 4
        gateway = f"198.18.{third}.{base + 1}"
        address = f"198.18.{third}.{base + 2}"
        pid = os.getpid()
        netns = f"{PREFIX}{pid}-{index}"
        host_if, pod_if = f"vgh{pid}-{index}", f"vgp{pid}-{index}"
        _ip("netns", "add", netns)
        _ip("link", "add", host_if, "type", "veth", "peer", "name", pod_if)
        _ip("link", "set", pod_if, "netns", netns)
        _ip("addr", "add", f"{gateway}/30", "dev", host_if)
        _ip("link", "set", host_if, "up")
        _ip("-n", netns, "addr", "add", f"{address}/30", "dev", pod_if)
        _ip("-n", netns, "link", "set", pod_if, "up")
        _ip("-n", netns, "link", "set", "lo", "up")
        _ip("-n", netns, "route", "add", "default", "via", gateway)
        host = PodHost(name, index, netns, host_if, address, gateway)
        self.hosts[name] = host
        return host

    def remove(self, name: str) -> None:
        host = self.hosts.pop(name, None)
        if host is None:
            return
        host.stop_servers()
        _ip("link", "delete", host.host_if, check=False)
        _ip("netns", "delete", host.netns, check=False)

    def close(self) -> None:
        for name in list(self.hosts):
            self.remove(name)
        cleanup_leftovers()
        if not others_running():
            unfence()
        os.close(self._slot_lock)
