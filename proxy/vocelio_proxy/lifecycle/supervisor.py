"""The supervisor of a multi-worker pod (`workers` > 1), run by `vocelio-proxy
serve` instead of the gateway itself. It owns:

- the public port's reservation: a socket bound with SO_REUSEPORT (never
  listening, so it takes no connections) that holds the port (and fixes it when
  `port: 0`) while N worker processes listen on it with SO_REUSEPORT; the
  kernel spreads new connections over the workers;
- the workers: each is `vocelio-proxy serve` with the same flags plus the
  hidden `--as-worker` (`lifecycle.worker`), its admin listener moved to
  127.0.0.1 on a free port that only the supervisor uses; a worker that dies
  is started again after a backoff (`policy.workers.RestartPolicy`), logged
  and counted (`vocelio_worker_restarts_total`); a worker that fails at the
  first start stops the pod with its one-line error, once; replacements that
  keep failing at start stop it too (exit 1);
- the admin listener (`admin.port`): `/metrics` merges the workers' metrics
  (`process.workers.merge_expositions`), `/readyz` is ready only when every
  worker is, `/livez` and `/health` answer for the supervisor and the workers,
  `/status` lists the workers with each one's own status;
- signals: SIGTERM/SIGINT go to every worker, each drains as a single process
  does (shutdown delay, then drain timeout); the supervisor exits when all have.

Called by `cli._serve`. See docs/operations/workers.md."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from vocelio_proxy.policy.workers import RestartPolicy, WorkerReadiness, pod_readiness
from vocelio_proxy.process.workers import merge_expositions
from vocelio_proxy.settings import ProxySettings

log = logging.getLogger("vocelio.proxy.workers")

#: Time a worker has to report that it listens (config load, health checks and Redis do not count).
START_TIMEOUT_S = 60.0
#: Budget of one request from the supervisor to a worker's admin listener.
WORKER_CALL_TIMEOUT_S = 2.0
#: A running worker is asked `/livez` at this interval; one that misses this many answers in a row
#: (its event loop is stuck) is killed and started again, as a kubelet would restart a hung pod.
WATCHDOG_INTERVAL_S = 5.0
WATCHDOG_MISSES = 3
_EXPOSITION = "text/plain; version=0.0.4; charset=utf-8"


class StartFailure(Exception):
    """The pod cannot start: `message` is the one line to print, `status` the exit status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class WorkerSlot:
    """One worker position (`index`) and the process that fills it now."""

    index: int
    process: asyncio.subprocess.Process | None = None
    admin_port: int | None = None
    state: str = "starting"  # starting | running | restarting | stopped
    restarts: int = 0
    started_at: float = 0.0
    last_exit: int | None = None
    last_error: str = ""
    pid: int | None = None  # of the process now, or the last one

    def as_dict(self) -> dict[str, Any]:
        return {"worker": self.index, "pid": self.process.pid if self.process else None, "state": self.state,
                "restarts": self.restarts, "last_exit": self.last_exit, "last_error": self.last_error or None}


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port) with SO_REUSEPORT, not listening: it keeps the port
    for the workers (and turns port 0 into one concrete port) without taking connections.
    OSError (EADDRINUSE...) when the port cannot be had, including when another program
    already listens on it with SO_REUSEPORT."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    # Linux lets any socket of the same user that also sets SO_REUSEPORT bind the port and take a
    # share of its connections. A listener already there (a second gateway started by mistake, a
    # server with reuseport) is refused as a busy port: a probe without SO_REUSEPORT cannot bind
    # beside a listening socket (SO_REUSEADDR only lets it past TIME_WAIT leftovers of a previous
    # run). It also turns port 0 into the concrete port the reservation takes.
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(address)
        address = probe.getsockname()
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except BaseException:
        sock.close()
        raise
    return sock


class Supervisor:
    """Runs `count` workers of `worker_argv` (the `serve` flags) until a signal or `stop`."""

    def __init__(self, settings: ProxySettings, worker_argv: Sequence[str], count: int, *,
                 policy: RestartPolicy | None = None, env: dict[str, str] | None = None,
                 watchdog_interval_s: float = WATCHDOG_INTERVAL_S, watchdog_misses: int = WATCHDOG_MISSES) -> None:
        self.settings = settings
        self.worker_argv = list(worker_argv)
        self.slots = [WorkerSlot(i) for i in range(count)]
        self.policy = policy or RestartPolicy()
        self.env = dict(os.environ if env is None else env)
        self.stopping = asyncio.Event()
        self.port = settings.port
        self.admin_port: int | None = None
        self._fatal: StartFailure | None = None
        self._session: aiohttp.ClientSession | None = None
        self.watchdog_interval_s = watchdog_interval_s
        self.watchdog_misses = watchdog_misses

    # -- workers --------------------------------------------------------------------------

    def _command(self, slot: WorkerSlot, channel_fd: int) -> list[str]:
        return [sys.executable, "-m", "vocelio_proxy.cli", "serve", *self.worker_argv,
                "--workers", "1", "--port", str(self.port),
                "--as-worker", f"{slot.index}:{channel_fd}:{os.getpid()}"]

    async def _spawn(self, slot: WorkerSlot) -> tuple[asyncio.StreamReader, asyncio.BaseTransport]:
        read_fd, write_fd = os.pipe()
        env = {**self.env, "VOCELIO_ADMIN__HOST": "127.0.0.1", "VOCELIO_ADMIN__PORT": "0"}
        try:
            slot.process = await asyncio.create_subprocess_exec(
                *self._command(slot, write_fd), pass_fds=(write_fd,), env=env, stdin=asyncio.subprocess.DEVNULL)
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        slot.pid = slot.process.pid
        slot.started_at = time.monotonic()
        slot.state = "starting"
        reader = asyncio.StreamReader()
        loop = asyncio.get_running_loop()
        transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader),
                                                    os.fdopen(read_fd, "rb", 0))
        return reader, transport

    async def _await_ready(self, slot: WorkerSlot, reader: asyncio.StreamReader) -> StartFailure | None:
        """None when the worker reports that it listens; its failure otherwise."""
        assert slot.process is not None
        try:
            line = await asyncio.wait_for(reader.readline(), START_TIMEOUT_S)
        except TimeoutError:
            slot.process.kill()
            return StartFailure(f"worker {slot.index} did not start within {START_TIMEOUT_S:.0f} s", 1)
        try:
            message = json.loads(line) if line else {}
        except ValueError:
            message = {}
        if message.get("event") == "ready":
            slot.admin_port = int(message["admin_port"])
            slot.state = "running"
            return None
        code = await slot.process.wait()
        if message.get("event") == "error":
            return StartFailure(str(message.get("message", "")), int(message.get("status", 1)))
        return StartFailure(f"worker {slot.index} exited with {_exit_text(code)} before it was ready", 1)

    async def _first_start(self, firsts: list[asyncio.Future[StartFailure | None]]) -> None:
        """Wait until every worker is ready, one fails, or a signal comes."""
        stop_wait = asyncio.ensure_future(self.stopping.wait())
        try:
            pending: set[asyncio.Future[Any]] = {*firsts, stop_wait}
            while stop_wait in pending and len(pending) > 1:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if any(f is not stop_wait and f.result() is not None for f in done):
                    return
        finally:
            stop_wait.cancel()

    async def _run_slot(self, slot: WorkerSlot, first: asyncio.Future[StartFailure | None]) -> None:
        try:
            await self._fill(slot, first)
        except Exception as exc:  # a supervisor bug or a failed fork: the pod stops, visibly
            log.exception("worker slot failed", extra={"fields": {"worker": slot.index}})
            failure = StartFailure(f"worker {slot.index}: {type(exc).__name__}: {exc}", 1)
            if not first.done():
                first.set_result(failure)
            self._give_up(failure)

    async def _fill(self, slot: WorkerSlot, first: asyncio.Future[StartFailure | None]) -> None:
        """Keep `slot` filled until the pod stops."""
        while not self.stopping.is_set():
            reader, channel = await self._spawn(slot)
            try:
                code = await self._one_run(slot, reader, first)
            finally:
                channel.close()
            if code is None or self.stopping.is_set():
                break
            ran_for = time.monotonic() - slot.started_at
            delay = self.policy.exited(slot.index, ran_for)
            slot.restarts += 1
            slot.state = "restarting"
            log.error("worker exited; restarting it", extra={"fields": {
                "worker": slot.index, "pid": slot.pid, "exit": _exit_text(code), "ran_for_s": round(ran_for, 3),
                "restarts": slot.restarts, "retry_in_s": delay}})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), delay)
        slot.state = "stopped"

    async def _one_run(self, slot: WorkerSlot, reader: asyncio.StreamReader,
                       first: asyncio.Future[StartFailure | None]) -> int | None:
        """One worker process from start to exit: its exit status, or None when the pod must stop."""
        assert slot.process is not None
        failure = await self._await_ready(slot, reader)
        at_first_start = not first.done()
        if at_first_start:
            first.set_result(failure)
        if failure is not None:
            slot.last_error = str(failure)
            if at_first_start:  # the pod stops with this error (run)
                return None
            if self.policy.start_failed(slot.index):
                self._give_up(StartFailure(f"workers keep failing at start ({slot.last_error})", 1))
                return None
        else:
            self.policy.started(slot.index)
        code = await slot.process.wait()
        slot.last_exit = code
        slot.admin_port = None
        return code

    async def _watchdog(self) -> None:
        """Kill a running worker that stops answering `/livez` (the restart path starts it again)."""
        misses: dict[int, tuple[int, int]] = {}  # worker -> (pid, consecutive misses)
        while True:
            await asyncio.sleep(self.watchdog_interval_s)
            answers = await self._each("/livez")
            if self.stopping.is_set():  # a draining worker closes its listeners: not a hang
                return
            for slot, answer in answers:
                if slot.state != "running" or slot.process is None or slot.process.returncode is not None:
                    continue
                pid = slot.process.pid
                seen_pid, count = misses.get(slot.index, (pid, 0))
                count = 0 if answer is not None or seen_pid != pid else count + 1
                misses[slot.index] = (pid, count)
                if count >= self.watchdog_misses:
                    log.error("worker does not answer; killing it", extra={"fields": {
                        "worker": slot.index, "pid": pid, "missed": count}})
                    misses.pop(slot.index)
                    with contextlib.suppress(ProcessLookupError):
                        slot.process.kill()

    def _give_up(self, failure: StartFailure) -> None:
        if self._fatal is None:
            self._fatal = failure
        self.stopping.set()

    def _signal_workers(self, sig: int) -> None:
        for slot in self.slots:
            if slot.process is not None and slot.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    slot.process.send_signal(sig)

    async def _stop_workers(self, tasks: list[asyncio.Task[None]]) -> None:
        """SIGTERM every worker and wait for each to drain; SIGKILL what outlives the bound."""
        self._signal_workers(signal.SIGTERM)
        bound = self.settings.shutdown_delay_s + self.settings.drain_timeout_s + 10.0
        processes = [s.process for s in self.slots if s.process is not None]
        waits = [asyncio.ensure_future(p.wait()) for p in processes]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=bound)
            if pending:
                log.error("workers did not drain in time; killing them", extra={"fields": {"bound_s": bound}})
                self._signal_workers(signal.SIGKILL)
                await asyncio.gather(*waits, return_exceptions=True)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- the pod's admin endpoints -------------------------------------------------------

    async def _call(self, slot: WorkerSlot, path: str) -> tuple[int, bytes] | None:
        """(status, body) of a GET to a worker's admin listener; None when it does not answer."""
        port = slot.admin_port
        if port is None or slot.state != "running" or self._session is None:
            return None
        try:
            async with self._session.get(f"http://127.0.0.1:{port}{path}",
                                         timeout=aiohttp.ClientTimeout(total=WORKER_CALL_TIMEOUT_S)) as resp:
                return resp.status, await resp.read()
        except (aiohttp.ClientError, TimeoutError):
            return None

    async def _each(self, path: str) -> list[tuple[WorkerSlot, tuple[int, bytes] | None]]:
        answers = await asyncio.gather(*(self._call(slot, path) for slot in self.slots))
        return list(zip(self.slots, answers, strict=True))

    async def readiness(self) -> tuple[bool, str, list[dict[str, Any]]]:
        facts = []
        shown = []
        for slot, answer in await self._each("/readyz"):
            ready: bool | None = None
            reason = slot.state if answer is None else "no readiness in the answer"
            if answer is not None:
                with contextlib.suppress(ValueError, AttributeError):
                    body = json.loads(answer[1])
                    ready, reason = bool(body.get("ready")), str(body.get("reason", ""))
            facts.append(WorkerReadiness(slot.index, slot.state == "running", ready, reason))
            shown.append({"worker": slot.index, "ready": bool(ready), "reason": reason})
        ready_now, reason_now = pod_readiness(self.stopping.is_set(), facts)
        return ready_now, reason_now, shown

    def _own_metrics(self) -> list[str]:
        lines = ["# HELP vocelio_workers Worker processes this pod runs (the workers setting).",
                 "# TYPE vocelio_workers gauge", f"vocelio_workers {len(self.slots)}",
                 "# HELP vocelio_worker_up 1 while a worker process runs and has reported it is ready.",
                 "# TYPE vocelio_worker_up gauge"]
        lines += [f'vocelio_worker_up{{worker="{s.index}"}} {1 if s.state == "running" else 0}' for s in self.slots]
        lines += ["# HELP vocelio_worker_restarts_total Worker processes started again after one died.",
                  "# TYPE vocelio_worker_restarts_total counter"]
        lines += [f'vocelio_worker_restarts_total{{worker="{s.index}"}} {s.restarts}' for s in self.slots]
        return lines

    async def _admin(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path == "/readyz":
            ready, reason, workers = await self.readiness()
            return web.json_response({"ready": ready, "reason": reason, "workers": workers},
                                     status=200 if ready else 503)
        if path == "/livez":
            return web.json_response({"status": "alive", "workers": len(self.slots),
                                      "running": sum(1 for s in self.slots if s.state == "running")})
        if path == "/metrics":
            texts = [(slot.index, answer[1].decode("utf-8", "replace"))
                     for slot, answer in await self._each("/metrics") if answer is not None and answer[0] == 200]
            exposition = merge_expositions(texts, self._own_metrics())
            return web.Response(body=exposition.encode(), headers={"Content-Type": _EXPOSITION})
        if path in ("/health", "/status"):
            return await self._per_worker(path)
        if path in ("/", "/docs", "/openapi.json"):
            for slot in self.slots:
                answer = await self._call(slot, path)
                if answer is not None:
                    kind = "text/html; charset=utf-8" if path == "/docs" else "application/json; charset=utf-8"
                    return web.Response(status=answer[0], body=answer[1], headers={"Content-Type": kind})
            return web.json_response({"error": {"status": 503, "message": "no worker answers"}}, status=503)
        return web.json_response({"error": {"status": 404, "message": "Not a gateway endpoint"}}, status=404)

    async def _per_worker(self, path: str) -> web.StreamResponse:
        """/health (the first worker's answer, `unhealthy` and 503 when any worker is not
        alive) or /status (the pod's readiness), each with every worker's own answer."""
        key = path.lstrip("/")
        workers: list[dict[str, Any]] = []
        worst = 200
        for slot, answer in await self._each(path):
            entry = slot.as_dict()
            if answer is None:
                worst = 503
            else:
                worst = max(worst, answer[0])
                with contextlib.suppress(ValueError):
                    entry[key] = json.loads(answer[1])
            workers.append(entry)
        body: dict[str, Any] = {"workers": workers, "draining": self.stopping.is_set()}
        if path == "/health":
            first: dict[str, Any] = next((w[key] for w in workers if isinstance(w.get(key), dict)), {})
            status = first.get("status", "unhealthy") if worst < 500 else "unhealthy"
            return web.json_response({**first, "status": status, **body}, status=worst)
        ready, reason, _ = await self.readiness()
        return web.json_response({"ready": ready, "readiness_reason": reason, **body})

    async def _start_admin(self) -> web.AppRunner | None:
        admin = self.settings.admin
        if admin.port is None:
            return None
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self._admin)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, admin.host, admin.port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        server = site._server  # aiohttp keeps the bound port only there
        sockets = getattr(server, "sockets", None) or []
        self.admin_port = int(sockets[0].getsockname()[1]) if sockets else admin.port
        return runner

    # -- the whole run ------------------------------------------------------------------------

    async def run(self, started: Callable[[Supervisor], Awaitable[None] | None] | None = None) -> None:
        """Start the pod; return after a graceful stop; raise `StartFailure` when it cannot start
        or its workers keep failing, OSError when a port cannot be had."""
        reservation = reserve_port(self.settings.host, self.settings.port)
        self.port = int(reservation.getsockname()[1])
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stopping.set)
        tasks: list[asyncio.Task[None]] = []
        runner: web.AppRunner | None = None
        # Workers are reached on 127.0.0.1: no DNS, so no resolver thread or channel to outlive the run.
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=aiohttp.ThreadedResolver()))
        try:
            runner = await self._start_admin()
            firsts: list[asyncio.Future[StartFailure | None]] = [loop.create_future() for _ in self.slots]
            tasks = [asyncio.create_task(self._run_slot(slot, first), name=f"worker-{slot.index}")
                     for slot, first in zip(self.slots, firsts, strict=True)]
            await self._first_start(firsts)
            failures = [f.result() for f in firsts if f.done() and f.result() is not None]
            if failures:
                self._give_up(failures[0] or StartFailure("a worker failed", 1))
            else:
                log.info("workers listening", extra={"fields": {
                    "host": self.settings.host, "port": self.port, "workers": len(self.slots),
                    "admin_port": self.admin_port}})
                tasks.append(asyncio.create_task(self._watchdog(), name="worker-watchdog"))
                if started is not None and not self.stopping.is_set():
                    result = started(self)
                    if result is not None:
                        await result
            await self.stopping.wait()
            log.info("stopping workers", extra={"fields": {"workers": len(self.slots)}})
            await self._stop_workers(tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._signal_workers(signal.SIGKILL)
            if runner is not None:
                await runner.cleanup()
            await self._session.close()
            reservation.close()
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)
        if self._fatal is not None:
            raise self._fatal
        log.info("stopped")


def _exit_text(code: int | None) -> str:
    if code is None:
        return "no status"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"status {code}"
