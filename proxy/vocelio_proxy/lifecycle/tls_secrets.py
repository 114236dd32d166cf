"""TLS certificates from the Kubernetes API (`tls.source: api`): watches exactly
the `kubernetes.io/tls` Secrets the settings name, one watch per Secret with a
`metadata.name` field selector, so the proxy's Role can grant get/list/watch on
those names only (`resourceNames`, no ClusterRole, no other Secret readable).
Each version is offered to `process.tls_certificates.TlsCertificates` (which
keeps the last good one); a deleted or malformed Secret keeps the served
certificate. Started by `tls_listener.start_tls_listener`, which owns the task;
each watch is supervised (an API outage or an expired watch is retried with
back-off, visible in `status`), so no watcher dies quietly."""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from kubernetes_asyncio import client, config, watch

from vocelio_proxy.process.supervision import WatcherStatus, describe_error, supervise
from vocelio_proxy.process.tls_certificates import TlsCertificates
from vocelio_proxy.settings import TlsCertificate

log = logging.getLogger("vocelio.proxy.tls")

TLS_SECRET_TYPE = "kubernetes.io/tls"  # noqa: S105 - a Secret type, not a credential


def secret_pair(secret: Any) -> tuple[bytes, bytes] | str:
    """(tls.crt, tls.key) of a Secret object, or why it holds no usable pair (one
    line, never its content)."""
    kind = getattr(secret, "type", None)
    if kind != TLS_SECRET_TYPE:
        return f"the Secret's type is {kind!r}, not {TLS_SECRET_TYPE}"
    data = getattr(secret, "data", None) or {}
    out: list[bytes] = []
    for key in ("tls.crt", "tls.key"):
        value = data.get(key)
        if not value:
            return f"the Secret has no {key}"
        try:
            out.append(base64.b64decode(value, validate=True))
        except (binascii.Error, ValueError):
            return f"the Secret's {key} is not base64"
    return out[0], out[1]


class KubeTlsSecrets:
    """One supervised list+watch per named Secret."""

    def __init__(self, store: TlsCertificates, certificates: list[TlsCertificate]) -> None:
        self.store = store
        self.certificates = [c for c in certificates if c.secret is not None]
        self.watchers = [WatcherStatus(f"tls-secret:{c.secret}") for c in self.certificates]

    async def run(self) -> None:
        try:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
        except config.ConfigException:
            await config.load_kube_config()
        async with client.ApiClient() as api:
            core = client.CoreV1Api(api)
            tasks = [asyncio.create_task(supervise(status, self._watcher(core, cert, status)), name=status.name)
                     for cert, status in zip(self.certificates, self.watchers, strict=True)]
            try:
                await asyncio.gather(*tasks)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    def _watcher(self, core: client.CoreV1Api, cert: TlsCertificate,
                 status: WatcherStatus) -> Callable[[], Awaitable[None]]:
        return lambda: self._watch(core, cert, status)

    def _offer(self, name: str, secret: Any) -> None:
        pair = secret_pair(secret)
        if isinstance(pair, str):
            self.store.missing(name, pair)
        else:
            self.store.offer(name, *pair)

    async def _watch(self, core: client.CoreV1Api, cert: TlsCertificate, status: WatcherStatus) -> None:
        """List the one Secret, then watch it; reconnect with back-off."""
        assert cert.secret is not None
        namespace, _, secret_name = cert.secret.partition("/")
        selector = f"metadata.name={secret_name}"
        delay = 0.5
        while True:
            try:
                listed = await core.list_namespaced_secret(namespace, field_selector=selector)
                if listed.items:
                    self._offer(cert.name, listed.items[0])
                else:
                    self.store.missing(cert.name, f"Secret {cert.secret} does not exist")
                status.state = "running"
                delay = 0.5
                async with watch.Watch() as w:
                    stream = w.stream(core.list_namespaced_secret, namespace, field_selector=selector,
                                      resource_version=listed.metadata.resource_version, timeout_seconds=300)
                    async for event in stream:
                        if event["type"] == "ERROR":  # e.g. 410 Gone: list again
                            raise RuntimeError("watch error (resource version expired)")
                        if event["type"] == "DELETED":
                            self.store.missing(cert.name, f"Secret {cert.secret} was deleted")
                        else:
                            self._offer(cert.name, event["object"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # API down, forbidden or watch expired: keep serving, retry
                status.state = "reconnecting"
                status.last_error = describe_error(exc)[:300]
                log.warning("tls secret watch interrupted",
                            extra={"fields": {"secret": cert.secret, "error": status.last_error}})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
