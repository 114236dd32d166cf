"""Starts and stops the TLS listener (`tls.enabled`): its certificate store,
the certificate source (file polling or the Kubernetes API watch) and the
listener itself. Called by `app.start_gateway`; the returned
`TlsListener` owns the source's task and is stopped by `RunningGateway.stop`.

Startup is strict: every listed certificate must be served before the port
opens (a one-line settings error naming each certificate that is not, and
why), so a pod never listens with a certificate missing; afterwards a bad
version only ever keeps the last good one (`process.tls_certificates`)."""

from __future__ import annotations

import asyncio
import contextlib
import time

from prometheus_client import CollectorRegistry

from vocelio_proxy.process.supervision import WatcherStatus
from vocelio_proxy.process.tls_certificates import (
    HandshakeFailures,
    TlsCertificates,
    load_files,
    poll_files,
    tls_policy,
)
from vocelio_proxy.settings import ProxySettings, SettingsError
from vocelio_proxy.wire.server import HttpServer
from vocelio_proxy.wire.tls import TlsEdge, quiet_undecodable_server_names

#: How long startup waits for the API source's first version of every Secret.
API_STARTUP_WAIT_S = 30.0


class TlsListener:
    """A started TLS listener with its certificates and the task that reloads them."""

    def __init__(self, server: HttpServer, store: TlsCertificates, port: int,
                 tasks: list[asyncio.Task[None]]) -> None:
        self.server = server
        self.store = store
        self.port = port
        self._tasks = tasks

    async def stop(self, drain_timeout_s: float) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.server.shutdown(drain_timeout_s)


async def start_tls_listener(settings: ProxySettings, server: HttpServer, registry: CollectorRegistry,
                             host: str, *, api_wait_s: float = API_STARTUP_WAIT_S,
                             watchers: dict[str, WatcherStatus] | None = None) -> TlsListener:
    """`watchers`: where the API watches' supervision is shown (`/status` config.watchers
    and the watcher metrics)."""
    tls = settings.tls
    edge = TlsEdge(tls_policy(tls, http2=settings.http2.enabled))
    store = TlsCertificates(tls, edge, registry, time.time)
    registry.register(HandshakeFailures(lambda: server.handshake_failures))
    tasks: list[asyncio.Task[None]] = []
    try:
        if tls.source == "files":
            load_files(store, tls.certificates)
            tasks.append(asyncio.create_task(poll_files(store, tls.reload_interval_s), name="tls-certificates"))
        else:
            from vocelio_proxy.lifecycle.tls_secrets import KubeTlsSecrets

            source = KubeTlsSecrets(store, tls.certificates)
            if watchers is not None:
                watchers.update({status.name: status for status in source.watchers})
            tasks.append(asyncio.create_task(source.run(), name="tls-certificates"))
            loop = asyncio.get_running_loop()
            deadline = loop.time() + api_wait_s
            while store.startup_problems() and loop.time() < deadline:
                store.changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(store.changed.wait(), max(0.0, deadline - loop.time()))
        problems = store.startup_problems()
        if problems:
            raise SettingsError(f"tls: cannot serve every certificate: {'; '.join(problems)}")
        # A ClientHello naming a non-ASCII server fails its handshake without a stderr traceback.
        quiet_undecodable_server_names()
        port = await server.listen(host, tls.port, ssl=edge.context, handshake_timeout_s=tls.handshake_timeout_s)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.shutdown(0)
        raise
    return TlsListener(server, store, port, tasks)
