"""A multi-worker pod for real: `vocelio-proxy serve --workers N` on 127.0.0.1
with a real aiohttp backend, each worker a real process sharing the port with
SO_REUSEPORT under the supervisor. Requests spread over the workers and the
pod's metrics count each once; a killed worker loses only its own requests and
is started again; SIGTERM drains every worker; readiness is false while any
worker is not ready; errors are one line; killing the supervisor leaves no
worker behind; `workers: 1` runs no supervisor at all. The supervisor's restart
and start-failure paths also run in-process with stand-in worker programs, and
the test process's descriptors and children are counted after."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.harness.controlplane import ROOT, free_port
from tests.harness.waiting import poll
from tests.unit.test_cli_errors import BIN, env, one_error_line, run
from vocelio_proxy.lifecycle.supervisor import StartFailure, Supervisor, WorkerSlot
from vocelio_proxy.policy.workers import RestartPolicy
from vocelio_proxy.process.workers import available_cpus
from vocelio_proxy.settings import ProxySettings

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_REUSEPORT and PDEATHSIG: Linux")

BACKEND = textwrap.dedent("""
    import asyncio, sys
    from aiohttp import web

    async def answer(request):
        await asyncio.sleep(float(request.query.get("s", "0")))
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/{tail:.*}", answer)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
""")


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    port = free_port()
    script = tmp_path_factory.mktemp("backend") / "backend.py"
    script.write_text(BACKEND)
    proc = subprocess.Popen([sys.executable, str(script), str(port)], env=env())
    try:
        poll("the backend", lambda: _get(f"http://127.0.0.1:{port}/")[0] == 200, deadline_s=30,
             errors=(OSError,))
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _get(url: str, timeout: float = 10) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # one connection per request
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class Pod:
    """A `vocelio-proxy serve` process and its ports."""

    def __init__(self, proc: subprocess.Popen[str], port: int, admin_port: int) -> None:
        self.proc = proc
        self.port = port
        self.admin_port = admin_port
        self.log: Path | None = None
        self.seen_pids: set[int] = set()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def admin(self, path: str) -> tuple[int, Any]:
        status, body = _get(f"http://127.0.0.1:{self.admin_port}{path}")
        return status, json.loads(body)

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        status, body = _get(f"http://127.0.0.1:{self.admin_port}/metrics")
        assert status == 200
        out = {}
        for family in text_string_to_metric_families(body.decode()):
            for sample in family.samples:
                out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return out

    def worker_pids(self) -> dict[int, int]:
        _, status = self.admin("/status")
        pids = {w["worker"]: w["pid"] for w in status["workers"]}
        self.seen_pids |= set(pids.values())
        return pids

    def echo_requests(self) -> dict[str, float]:
        """Answered requests of the routed service, by worker label."""
        out: dict[str, float] = {}
        for (name, labels), value in self.metrics().items():
            fields = dict(labels)
            if name == "vocelio_requests_total" and fields.get("service") == "echo":
                out[fields["worker"]] = out.get(fields["worker"], 0.0) + value
        return out


PodFactory = Callable[..., Pod]


@pytest.fixture
def pod(tmp_path: Path, backend: int) -> Iterator[PodFactory]:
    started: list[Pod] = []

    def start(workers: str = "2", shutdown_delay_s: float = 0, drain_timeout_s: float = 10,
              preexec: Callable[[], None] | None = None) -> Pod:
        config = tmp_path / "config.json"
        config.write_text(json.dumps({"schema_version": 1, "services": [{
            "name": "echo", "prefixes": ["/api/echo"],
            "backends": [{"name": "b", "endpoints": [{"address": "127.0.0.1", "port": backend}]}]}]}))
        port, admin_port = free_port(), free_port()
        settings = tmp_path / "settings.yaml"
        settings.write_text(f"admin: {{port: {admin_port}}}\nshutdown_delay_s: {shutdown_delay_s}\n"
                            f"drain_timeout_s: {drain_timeout_s}\naccess_log: false\n")
        proc = subprocess.Popen(
            [str(BIN / "vocelio-proxy"), "serve", "--config", str(config), "--settings", str(settings),
             "--host", "127.0.0.1", "--port", str(port), "--workers", workers],
            env=env(), stdout=(tmp_path / f"pod-{len(started)}.log").open("w"), stderr=subprocess.PIPE, text=True,
            preexec_fn=preexec)
        the_pod = Pod(proc, port, admin_port)
        the_pod.log = tmp_path / f"pod-{len(started)}.log"
        started.append(the_pod)
        poll("the pod to be ready", lambda: the_pod.admin("/readyz")[0] == 200, deadline_s=60,
             errors=(OSError, ValueError))
        return the_pod

    yield start
    for one in started:
        one.seen_pids |= {child.pid for child in _children(one.proc.pid)}
        if one.proc.poll() is None:
            one.proc.send_signal(signal.SIGKILL)
            one.proc.wait(timeout=30)
        for pid in one.seen_pids:  # hygiene after a failed test: never leave a worker behind
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _children(pid: int) -> list[psutil.Process]:
    try:
        return list(psutil.Process(pid).children(recursive=True))
    except psutil.NoSuchProcess:
        return []


def _alive(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def _refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True


def _slow_requests(pod: Pod, count: int, seconds: float) -> tuple[ThreadPoolExecutor, list[Any]]:
    pool = ThreadPoolExecutor(count)

    def one() -> int:
        return _get(pod.url(f"/api/echo/slow?s={seconds}"), timeout=30)[0]

    futures = [pool.submit(one) for _ in range(count)]
    poll(f"{count} requests in flight on the pod",
         lambda: pod.metrics()[("vocelio_requests_in_flight", ())] == count, deadline_s=20)
    return pool, futures


def test_requests_spread_over_the_workers_and_the_pods_metrics_count_each_once(pod: PodFactory) -> None:
    gateway = pod("2")
    sent = 40
    statuses = [_get(gateway.url(f"/api/echo/{i}"))[0] for i in range(sent)]
    assert statuses == [200] * sent
    by_worker = gateway.echo_requests()
    assert sorted(by_worker) == ["0", "1"]  # both workers answered
    assert all(count > 0 for count in by_worker.values()), by_worker
    assert sum(by_worker.values()) == sent
    metrics = gateway.metrics()
    assert metrics[("vocelio_workers", ())] == 2
    assert metrics[("vocelio_worker_up", (("worker", "0"),))] == 1
    assert metrics[("vocelio_requests_in_flight", ())] == 0  # one series per pod, the scrapes not counted
    _, ready = gateway.admin("/readyz")
    assert [w["ready"] for w in ready["workers"]] == [True, True]
    assert gateway.log is not None
    lines = [json.loads(line) for line in gateway.log.read_text().splitlines() if line.startswith("{")]
    assert sorted(line.get("worker") for line in lines if line["msg"] == "listening") == [0, 1]  # logs say who


def test_a_killed_worker_loses_only_its_in_flight_requests_and_is_started_again(pod: PodFactory) -> None:
    gateway = pod("2")
    pids = gateway.worker_pids()
    pool, futures = _slow_requests(gateway, 6, 3.0)
    metrics = gateway.metrics()
    in_flight = {w: metrics[("vocelio_worker_requests_in_flight", (("worker", str(w)),))] for w in pids}
    victim = max(in_flight, key=lambda w: in_flight[w])
    os.kill(pids[victim], signal.SIGKILL)
    outcomes = []
    for future in futures:
        try:
            outcomes.append(future.result(timeout=30))
        except OSError:  # reset, or closed without an answer
            outcomes.append(None)
    pool.shutdown()
    assert outcomes.count(None) == in_flight[victim] > 0
    assert outcomes.count(200) == 6 - in_flight[victim]

    def restarted() -> bool:
        _, status = gateway.admin("/status")
        slot = status["workers"][victim]
        return bool(slot["state"] == "running" and slot["pid"] != pids[victim] and slot["restarts"] == 1)

    poll("the killed worker to be started again", restarted, deadline_s=30, errors=(OSError, ValueError))
    assert gateway.metrics()[("vocelio_worker_restarts_total", (("worker", str(victim)),))] == 1
    poll("the pod to be ready again", lambda: gateway.admin("/readyz")[0] == 200, deadline_s=30,
         errors=(OSError, ValueError))
    assert [_get(gateway.url(f"/api/echo/after/{i}"))[0] for i in range(10)] == [200] * 10


def test_sigterm_drains_every_worker_and_refuses_new_connections_after(pod: PodFactory) -> None:
    gateway = pod("2", shutdown_delay_s=0, drain_timeout_s=15)
    pids = list(gateway.worker_pids().values())
    pool, futures = _slow_requests(gateway, 6, 2.0)
    in_flight = gateway.metrics()
    assert all(in_flight[("vocelio_worker_requests_in_flight", (("worker", w),))] >= 0 for w in ("0", "1"))
    gateway.proc.send_signal(signal.SIGTERM)
    poll("new connections to be refused", lambda: _refused(gateway.port), deadline_s=10)
    assert [f.result(timeout=30) for f in futures] == [200] * 6  # every in-flight request finished
    pool.shutdown()
    assert gateway.proc.wait(timeout=30) == 0
    assert not [pid for pid in pids if _alive(pid)]
    assert "Traceback" not in (gateway.proc.stderr.read() if gateway.proc.stderr else "")


def test_readiness_is_false_while_any_worker_is_not_ready(pod: PodFactory) -> None:
    gateway = pod("2")
    pids = gateway.worker_pids()
    os.kill(pids[1], signal.SIGSTOP)  # alive but answering nothing
    try:
        def unready() -> bool:
            status, body = gateway.admin("/readyz")
            return status == 503 and "worker 1 does not answer" in body["reason"]

        poll("the pod to be unready", unready, deadline_s=20, errors=(OSError, ValueError))
        status, health = gateway.admin("/health")
        assert status == 503
        assert health["status"] == "unhealthy"
    finally:
        os.kill(pids[1], signal.SIGCONT)
    poll("the pod to be ready again", lambda: gateway.admin("/readyz")[0] == 200, deadline_s=20,
         errors=(OSError, ValueError))


def test_killing_the_supervisor_leaves_no_worker_behind(pod: PodFactory) -> None:
    gateway = pod("2", shutdown_delay_s=0, drain_timeout_s=5)
    pids = list(gateway.worker_pids().values())
    assert all(_alive(pid) for pid in pids)
    gateway.proc.send_signal(signal.SIGKILL)
    gateway.proc.wait(timeout=10)
    poll("the workers to exit with their supervisor", lambda: not any(_alive(pid) for pid in pids), deadline_s=30)
    poll("the port to be free", lambda: _refused(gateway.port), deadline_s=10)


def test_one_worker_runs_no_supervisor_and_no_worker_label(pod: PodFactory) -> None:
    gateway = pod("1")
    assert psutil.Process(gateway.proc.pid).children(recursive=True) == []
    assert _get(gateway.url("/api/echo/x"))[0] == 200
    names = {labels for (_, labels) in gateway.metrics()}
    assert not any(dict(labels).get("worker") for labels in names)
    assert ("vocelio_workers", ()) not in gateway.metrics()


def test_auto_runs_one_worker_per_cpu_of_the_affinity_mask(pod: PodFactory) -> None:
    single = pod("auto", preexec=lambda: os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}))
    assert psutil.Process(single.proc.pid).children(recursive=True) == []
    expected = available_cpus()
    if expected < 2:
        pytest.skip("one CPU available: auto is one worker")
    several = pod("auto")
    assert several.metrics()[("vocelio_workers", ())] == expected
    assert len(psutil.Process(several.proc.pid).children()) == expected


# -- errors: one line, once -------------------------------------------------------------------


def test_workers_without_the_admin_listener_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "c.json"
    config.write_text('{"schema_version": 1, "services": []}')
    done = run("vocelio-proxy", "serve", "--config", str(config), "--workers", "2")
    assert one_error_line(done, 2, "vocelio-proxy serve:", "workers 2 needs admin.port").count("\n") == 0
    done = run("vocelio-proxy", "serve", "--config", str(config), "--workers", "many")
    assert "'many'" in one_error_line(done, 2, "--workers", "'many' is not a number or auto")


def test_a_busy_port_with_workers_is_one_line_and_starts_nothing(tmp_path: Path, backend: int) -> None:
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"schema_version": 1, "services": [{
        "name": "echo", "prefixes": ["/api/echo"],
        "backends": [{"name": "b", "endpoints": [{"address": "127.0.0.1", "port": backend}]}]}]}))
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        done = run("vocelio-proxy", "serve", "--config", str(config), "--host", "127.0.0.1", "--port",
                   str(holder.getsockname()[1]), "--workers", "2", VOCELIO_ADMIN__PORT="0")
    assert one_error_line(done, 1, "vocelio-proxy serve: cannot listen", "another process holds the port").startswith(
        "vocelio-proxy serve: cannot listen")


def test_a_start_error_of_the_workers_is_the_single_process_line_printed_once(tmp_path: Path, backend: int) -> None:
    # The settings load (so the supervisor starts workers), but the application cannot start.
    config, settings = tmp_path / "c.json", tmp_path / "s.yaml"
    config.write_text(json.dumps({"schema_version": 1, "services": [{
        "name": "echo", "prefixes": ["/api/echo"],
        "backends": [{"name": "b", "endpoints": [{"address": "127.0.0.1", "port": backend}]}]}]}))
    settings.write_text('redis_url: "not a url"\nadmin: {port: 0}\n')
    flags = ("serve", "--config", str(config), "--settings", str(settings), "--host", "127.0.0.1", "--port", "0")
    single = run("vocelio-proxy", *flags, "--workers", "1")
    line = one_error_line(single, 70, "vocelio-proxy serve:", "Redis URL")
    several = run("vocelio-proxy", *flags, "--workers", "3")
    assert one_error_line(several, 70) == line


def test_standalone_mode_refuses_workers_in_one_line(tmp_path: Path) -> None:
    done = run("vocelio-gateway", "standalone", "--resources", str(ROOT / "examples" / "resources"),
               VOCELIO_WORKERS="2", VOCELIO_ADMIN__PORT="0")
    assert "standalone mode runs one process" in one_error_line(
        done, 1, "refusing to start: workers 2: standalone mode runs one process")


# -- the supervisor's start and restart paths, with stand-in worker programs ------------------

STAND_IN = textwrap.dedent("""
    import json, os, sys, time
    index, fd = (int(p) for p in sys.argv[1].split(":"))
    runs = sys.argv[2]
    mode = sys.argv[3]
    with open(os.path.join(runs, f"{index}"), "a") as f:
        f.write("x")
    started = len(open(os.path.join(runs, f"{index}")).read())
    out = os.fdopen(fd, "w")
    if mode == "bad-config" and index == 1:
        out.write(json.dumps({"event": "error", "message": "invalid settings: port: too big", "status": 2}) + "\\n")
        sys.exit(2)
    if mode == "crash-loop" and started > 1:
        sys.exit(3)  # a replacement that dies before it is ready
    out.write(json.dumps({"event": "ready", "admin_port": 1}) + "\\n")
    out.flush()
    time.sleep(0.2 if mode == "crash-loop" else 60)
    sys.exit(1)
""")


class StandInSupervisor(Supervisor):
    def __init__(self, script: Path, runs: Path, mode: str, count: int, policy: RestartPolicy) -> None:
        super().__init__(ProxySettings(host="127.0.0.1", port=0, admin={"port": None}, shutdown_delay_s=0,
                                       drain_timeout_s=1), [], count, policy=policy)
        self.script, self.runs, self.mode = script, runs, mode

    def _command(self, slot: WorkerSlot, channel_fd: int) -> list[str]:
        return [sys.executable, str(self.script), f"{slot.index}:{channel_fd}", str(self.runs), self.mode]


def _fds() -> dict[str, str]:
    out = {}
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor is gone by now
            out[fd] = os.readlink(f"/proc/self/fd/{fd}")
    return out


def _run_stand_in(tmp_path: Path, mode: str, policy: RestartPolicy) -> tuple[StartFailure, StandInSupervisor]:
    script, runs = tmp_path / "worker.py", tmp_path / "runs"
    script.write_text(STAND_IN)
    runs.mkdir()
    supervisor = StandInSupervisor(script, runs, mode, 2, policy)
    gc.collect()  # earlier tests' objects close their descriptors now, not during the count
    fds_before = _fds()
    children_before = {p.pid for p in psutil.Process().children(recursive=True)}
    gc.disable()  # only explicit closes count: the collector must not tidy a leak away
    try:
        with pytest.raises(StartFailure) as failure:
            asyncio.run(asyncio.wait_for(supervisor.run(), 60))
        assert set(_fds().items()) - set(fds_before.items()) == set()  # every pipe and socket it opened is closed
    finally:
        gc.enable()
    assert {p.pid for p in psutil.Process().children(recursive=True)} == children_before  # every worker reaped
    return failure.value, supervisor


def test_a_worker_that_fails_at_the_first_start_stops_the_pod_with_its_one_line(tmp_path: Path) -> None:
    failure, supervisor = _run_stand_in(tmp_path, "bad-config", RestartPolicy())
    assert str(failure) == "invalid settings: port: too big"
    assert failure.status == 2
    assert all(slot.restarts == 0 for slot in supervisor.slots)  # nothing restarted: a start error is final
    assert (tmp_path / "runs" / "1").read_text() == "x"


def test_replacements_that_keep_failing_at_start_stop_the_pod(tmp_path: Path) -> None:
    failure, supervisor = _run_stand_in(tmp_path, "crash-loop", RestartPolicy(min_s=0.01, max_s=0.05,
                                                                              max_start_failures=3))
    assert "workers keep failing at start" in str(failure)
    assert failure.status == 1
    assert "exited with status 3 before it was ready" in str(failure)
    assert sum(slot.restarts for slot in supervisor.slots) >= 3


def test_a_worker_that_stops_answering_is_killed_and_started_again(tmp_path: Path, backend: int) -> None:
    config, settings = tmp_path / "config.json", tmp_path / "settings.yaml"
    config.write_text(json.dumps({"schema_version": 1, "services": [{
        "name": "echo", "prefixes": ["/api/echo"],
        "backends": [{"name": "b", "endpoints": [{"address": "127.0.0.1", "port": backend}]}]}]}))
    settings.write_text("admin: {port: 0}\nshutdown_delay_s: 0\ndrain_timeout_s: 2\n")
    supervisor = Supervisor(
        ProxySettings(host="127.0.0.1", port=0, admin={"port": 0}, shutdown_delay_s=0, drain_timeout_s=2),
        ["--config", str(config), "--settings", str(settings), "--host", "127.0.0.1"], 2, env=env(),
        watchdog_interval_s=0.3, watchdog_misses=2)
    seen: dict[str, Any] = {}

    async def scenario(running: Supervisor) -> None:
        hung = running.slots[0]
        assert hung.process is not None
        seen["hung_pid"] = hung.process.pid
        os.kill(hung.process.pid, signal.SIGSTOP)  # alive, answering nothing
        loop = asyncio.get_running_loop()
        end = loop.time() + 30
        while not (hung.restarts == 1 and hung.state == "running"):
            assert loop.time() < end, "the hung worker was not replaced"
            await asyncio.sleep(0.05)
        seen["new_pid"] = hung.process.pid if hung.process else None
        seen["other_restarts"] = running.slots[1].restarts
        running.stopping.set()

    asyncio.run(asyncio.wait_for(supervisor.run(scenario), 90))
    assert seen["new_pid"] not in (None, seen["hung_pid"])
    assert not _alive(seen["hung_pid"])
    assert seen["other_restarts"] == 0  # the answering worker was left alone
