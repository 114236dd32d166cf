"""The config watcher never dies quietly. A fault that kills the watch loop is
caught, logged once with its traceback at ERROR, counted in
`vocelio_config_watcher_restarts_total`, shown in `/status` and followed by a
restart that resumes hot reload; a source whose load fails in an unexpected
way is a rejected reload that is retried without waiting for a change; the
Kubernetes API source's own loop is supervised the same way."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging

import pytest

from tests.harness.app_fixtures import GatewayFactory, UpstreamFactory, poll, service
from vocelio_contract.config import GatewayConfig
from vocelio_proxy.lifecycle.kube_source import KubeConfigMapSource
from vocelio_proxy.process.supervision import WatcherStatus, supervise


class FaultySource:
    """Serves `config`; raises an unexpected exception from `fingerprint` or `load` the next
    `fail_fingerprint` / `fail_load` times they are called."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config.seal()
        self.fail_fingerprint = 0
        self.fail_load = 0

    def fingerprint(self) -> object:
        if self.fail_fingerprint:
            self.fail_fingerprint -= 1
            raise ZeroDivisionError("injected fault in the watch loop")
        return self.config.hash

    def load(self) -> GatewayConfig:
        if self.fail_load:
            self.fail_load -= 1
            raise KeyError("injected fault in load")
        return self.config

    def describe(self) -> str:
        return "faulty"


def metric(text: str, line_start: str) -> float:
    for line in text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{line_start} not in metrics")


async def test_a_crashed_watcher_is_logged_counted_shown_and_restarted(upstream_factory: UpstreamFactory,
                                                                       gateway_factory: GatewayFactory,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    up = await upstream_factory()
    source = FaultySource(GatewayConfig(services=[service("one", up.endpoint())]))
    gw = await gateway_factory(source=source, config_poll_s=0.05)
    doc = json.loads((await gw.get("/status"))[2])
    assert doc["config"]["watcher"] == {"state": "running", "restarts": 0, "last_error": None,
                                        "last_error_at": None}
    caplog.set_level(logging.WARNING, logger="vocelio.proxy.config")

    source.fail_fingerprint = 1
    source.config = GatewayConfig(services=[service("one", up.endpoint()), service("two", up.endpoint())]).seal()
    await poll(lambda: gw.state.watchers["config-watch"].restarts == 1, "the watcher crashed once")
    # Hot reload is back after the restart: the change made while it was down is applied.
    await poll(lambda: gw.state.runtime.config.hash == source.config.hash, "reload after restart", 5)  # type: ignore[union-attr]
    assert (await gw.get("/api/v1/two/x"))[0] == 200

    watcher = json.loads((await gw.get("/status"))[2])["config"]["watcher"]
    assert watcher["state"] == "running"
    assert watcher["restarts"] == 1
    assert watcher["last_error"] == "ZeroDivisionError: injected fault in the watch loop"
    assert watcher["last_error_at"] is not None
    metrics = (await gw.get("/metrics"))[2].decode()
    assert metric(metrics, 'vocelio_config_watcher_restarts_total{watcher="config-watch"}') == 1.0
    assert metric(metrics, 'vocelio_config_watcher_up{watcher="config-watch"}') == 1.0
    crashes = [r for r in caplog.records if r.getMessage() == "background loop crashed; restarting it"]
    assert len(crashes) == 1
    assert crashes[0].levelno == logging.ERROR
    assert crashes[0].exc_info is not None


async def test_an_unexpected_load_failure_is_a_rejected_reload_that_is_retried(upstream_factory: UpstreamFactory,
                                                                               gateway_factory: GatewayFactory) -> None:
    up = await upstream_factory()
    source = FaultySource(GatewayConfig(services=[service("one", up.endpoint())]))
    gw = await gateway_factory(source=source, config_poll_s=0.05)
    source.fail_load = 1
    source.config = GatewayConfig(services=[service("two", up.endpoint())]).seal()
    await poll(lambda: gw.state.reloads_failed == 1, "the failed load is reported")
    # The old config keeps serving, the failure is named, the watcher did not crash ...
    assert gw.state.watchers["config-watch"].restarts == 0
    # ... and the load is retried although the fingerprint does not change again.
    await poll(lambda: gw.state.runtime.config.hash == source.config.hash, "retried load", 5)  # type: ignore[union-attr]
    assert (await gw.get("/api/v1/two/x"))[0] == 200
    metrics = (await gw.get("/metrics"))[2].decode()
    assert metric(metrics, 'vocelio_config_reloads_total{result="error"}') == 1.0
    assert gw.state.last_error == ""


async def test_a_load_failure_before_any_config_shows_in_status_with_its_cause(gateway_factory: GatewayFactory) -> None:
    source = FaultySource(GatewayConfig())
    source.fail_load = 10_000
    gw = await gateway_factory(source=source, config_poll_s=0.05, wait_ready=False)
    await poll(lambda: gw.state.reloads_failed >= 1, "failed load")
    doc = json.loads((await gw.get("/status"))[2])
    assert "unexpected error while loading: KeyError: 'injected fault in load'" in doc["config"]["last_error"]
    assert (await gw.get("/readyz"))[0] == 503


async def test_a_crash_loop_logs_the_traceback_once_and_backs_off(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="vocelio.proxy.config")
    status = WatcherStatus("test-loop")
    calls: list[float] = []
    loop = asyncio.get_running_loop()
    healthy = asyncio.Event()

    async def body() -> None:
        calls.append(loop.time())
        if len(calls) <= 4:
            raise RuntimeError("always the same fault")
        healthy.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(supervise(status, body, backoff_min_s=0.02, backoff_max_s=0.08))
    await asyncio.wait_for(healthy.wait(), 5)
    assert status.restarts == 4
    assert status.state == "running"
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    assert gaps[0] >= 0.02
    assert gaps[2] >= 0.08
    assert gaps[3] >= 0.08
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(errors) == 1
    assert errors[0].exc_info is not None
    assert len(warnings) == 3
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert status.state == "stopped"


async def test_a_loop_that_returns_is_restarted_too() -> None:
    status = WatcherStatus("returns")
    runs = 0
    again = asyncio.Event()

    async def body() -> None:
        nonlocal runs
        runs += 1
        if runs == 2:
            again.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(supervise(status, body, backoff_min_s=0.01))
    await asyncio.wait_for(again.wait(), 5)
    assert status.restarts == 1
    assert "stopped without being cancelled" in status.last_error
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_the_api_source_loop_is_supervised_and_shown_in_status(gateway_factory: GatewayFactory,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # No in-cluster service account and no kubeconfig: the client set-up fails outside the
    # reconnect loop, which used to end the task silently.
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", "/nonexistent/kubeconfig")
    source = KubeConfigMapSource("vocelio-system", "gateway-config")
    gw = await gateway_factory(source=source, config_poll_s=0.05, wait_ready=False)
    await poll(lambda: source.status.restarts >= 1, "the API watch crashed and was restarted", 5)
    doc = json.loads((await gw.get("/status"))[2])
    api = doc["config"]["watchers"]["config-source"]
    assert api["restarts"] >= 1
    assert api["state"] in ("running", "restarting")
    assert "ConfigException" in api["last_error"]
    assert doc["config"]["watchers"]["config-watch"]["restarts"] == 0
    metrics = (await gw.get("/metrics"))[2].decode()
    assert metric(metrics, 'vocelio_config_watcher_restarts_total{watcher="config-source"}') >= 1.0
