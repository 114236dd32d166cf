"""Fixtures for TLS listener tests (tests/tls, tests/adversarial/test_tls_*.py):
a CA, certificate directories mounted the way kubelet mounts
`kubernetes.io/tls` Secrets, and a gateway started in-process with its TLS
listener (and a real upstream behind it)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.harness.app_fixtures import Handler, Upstream, UpstreamFactory, poll, service
from tests.harness.tls_tools import Issued, TestCa, mount_secret
from vocelio_contract.config import GatewayConfig
from vocelio_proxy.lifecycle.app import RunningGateway, create_app, start_gateway
from vocelio_proxy.lifecycle.sources import StaticSource
from vocelio_proxy.settings import ProxySettings


@dataclass
class TlsGateway:
    running: RunningGateway
    ca_file: Path
    upstream: Upstream

    @property
    def port(self) -> int:
        return self.running.port

    @property
    def tls_port(self) -> int:
        assert self.running.tls_port is not None
        return self.running.tls_port


#: `await make({"name": Issued, ...}, **settings)`: the first certificate is the default.
TlsGatewayFactory = Callable[..., Awaitable[TlsGateway]]


@pytest.fixture(params=["asyncio", "uvloop"])
def event_loop_policy(request: pytest.FixtureRequest) -> asyncio.AbstractEventLoopPolicy:
    """Every TLS case on both loops: the CLI serves on uvloop, whose TLS layer is its own."""
    if request.param == "uvloop":
        import uvloop

        return uvloop.EventLoopPolicy()  # type: ignore[no-any-return]
    return asyncio.DefaultEventLoopPolicy()


@pytest.fixture
def ca() -> TestCa:
    return TestCa()


@pytest.fixture
async def tls_gateway(tmp_path: Path, ca: TestCa, upstream_factory: UpstreamFactory,
                      ) -> AsyncIterator[TlsGatewayFactory]:
    running: list[RunningGateway] = []
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca.ca_pem)

    async def make(certificates: dict[str, Issued], tls: dict[str, Any] | None = None,
                   handler: Handler | None = None, **settings: Any) -> TlsGateway:
        listed = []
        for name, issued in certificates.items():
            mount_secret(tmp_path / name, issued)
            listed.append({"name": name, "dir": str(tmp_path / name)})
        up = await upstream_factory(handler)
        config = GatewayConfig(services=[service("echo", up.endpoint(), prefixes=["/api/echo"])])
        settings.setdefault("access_log", False)
        tls_settings = {"enabled": True, "port": 0, "certificates": listed, "reload_interval_s": 0.2,
                        **(tls or {})}
        app = create_app(ProxySettings(port=0, tls=tls_settings, **settings), StaticSource(config.seal()))
        started = await start_gateway(app, "127.0.0.1", 0)
        running.append(started)
        from vocelio_proxy.lifecycle import appkeys as keys

        state = app[keys.STATE]
        await poll(lambda: state.runtime is not None and state.health_round_done, "gateway ready")
        return TlsGateway(started, ca_file, up)

    yield make
    for gateway in running:
        await gateway.stop(1.0)
