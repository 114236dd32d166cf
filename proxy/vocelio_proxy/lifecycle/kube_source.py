"""Config from the Kubernetes API instead of a mounted volume: watches the
gateway's config ConfigMap(s) (label `gateway.vocelio.ai/config=<name>`) for
sub-second propagation, reassembling sharded configs. An edge module: the app
owns its `run` task; the reload loop polls its cheap fingerprint. `run` is
supervised: an API outage or an expired watch is retried inside the loop with
backoff (shown as `reconnecting`), and anything that escapes the loop (client
set-up failing, a bug) is a logged, counted crash followed by a restart,
visible in `/status` under `config.watchers["config-source"]`."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from kubernetes_asyncio import client, config, watch

from vocelio_contract.config import ConfigError, GatewayConfig, parse_config
from vocelio_contract.sharding import join_sharded
from vocelio_proxy.process.supervision import WatcherStatus, describe_error, supervise

log = logging.getLogger("vocelio.proxy.config")


class KubeConfigMapSource:
    def __init__(self, namespace: str, name: str) -> None:
        self.namespace = namespace
        self.name = name
        self._data: dict[str, dict[str, str]] = {}
        self._versions: dict[str, str] = {}
        self.connected = False
        self.status = WatcherStatus("config-source")
        self.watchers = [self.status]

    def fingerprint(self) -> object:
        return tuple(sorted(self._versions.items())) or None

    def load(self) -> GatewayConfig:
        main = self._data.get(self.name)
        if main is None:
            raise ConfigError(f"ConfigMap {self.namespace}/{self.name} not found")
        if "gateway.json" in main:
            return parse_config(main["gateway.json"])
        if "manifest.json" not in main:
            raise ConfigError(f"ConfigMap {self.namespace}/{self.name} has neither gateway.json nor manifest.json")
        return join_sharded(main["manifest.json"], lambda i: self._data[f"{self.name}-part-{i}"]["part"])

    def describe(self) -> str:
        return f"configmap:{self.namespace}/{self.name}"

    async def run(self) -> None:
        """The API watch under supervision; runs until cancelled."""
        await supervise(self.status, self._run)

    async def _run(self) -> None:
        """List, then watch, reconnecting with back-off."""
        try:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
        except config.ConfigException:
            await config.load_kube_config()
        selector = f"gateway.vocelio.ai/config={self.name}"
        delay = 0.5
        async with client.ApiClient() as api:
            core = client.CoreV1Api(api)
            while True:
                try:
                    listed = await core.list_namespaced_config_map(self.namespace, label_selector=selector)
                    self._replace({cm.metadata.name: cm for cm in listed.items})
                    self.connected = True
                    self.status.state = "running"
                    delay = 0.5
                    async with watch.Watch() as w:
                        stream = w.stream(core.list_namespaced_config_map, self.namespace, label_selector=selector,
                                          resource_version=listed.metadata.resource_version, timeout_seconds=300)
                        async for event in stream:
                            if event["type"] == "ERROR":  # e.g. 410 Gone: list again
                                raise ConfigError(f"watch error: {str(event.get('raw_object'))[:200]}")
                            self._apply(event["type"], event["object"])
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # API down or watch expired: keep the last config, retry
                    self.connected = False
                    self.status.state = "reconnecting"
                    self.status.last_error = describe_error(exc)
                    log.warning("config watch interrupted", extra={"fields": {"error": str(exc)[:300]}})
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 10.0)

    def _replace(self, objects: dict[str, Any]) -> None:
        self._data = {name: dict(cm.data or {}) for name, cm in objects.items()}
        self._versions = {name: cm.metadata.resource_version for name, cm in objects.items()}

    def _apply(self, kind: str, cm: Any) -> None:
        name = cm.metadata.name
        if kind == "DELETED":
            self._data.pop(name, None)
            self._versions.pop(name, None)
        else:
            self._data[name] = dict(cm.data or {})
            self._versions[name] = cm.metadata.resource_version
