"""The kopf edge: a registry (not kopf's global one) with login, startup and
cleanup handlers and the watch-event handlers that feed the reconciler's
index. `run_operator` starts kopf with peering and a liveness endpoint."""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Any

import kopf
from kubernetes_asyncio import client, config
from prometheus_client import start_http_server

from .metrics import OperatorMetrics
from .reconciler import Reconciler
from .resources import GROUP, VERSION
from .settings import OperatorSettings
from .writer import ApiWriter

log = logging.getLogger("vocelio.operator")


async def _api_client() -> client.ApiClient:
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        await config.load_kube_config()
    return client.ApiClient()


def build_registry(settings: OperatorSettings) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        op: OperatorSettings = memo.op_settings
        settings.peering.name = op.peering
        # kopf pauses every replica whose priority equals another's, so the chart's replicas (started
        # without one) would all stand by and stop reconciling: they draw distinct random negative
        # priorities instead, so exactly one is active and any replica given --priority (>0) wins.
        settings.peering.priority = op.priority or -(secrets.randbelow(2**31 - 2) + 1)
        settings.peering.mandatory = True
        settings.posting.level = logging.WARNING
        # Our handlers only update an index; the reconciler coalesces, so kopf's own
        # per-object batching would only add latency.
        settings.batching.batch_window = 0.01
        settings.watching.server_timeout = 300
        settings.watching.client_timeout = 330
        api = await _api_client()
        metrics = OperatorMetrics()
        if op.metrics_port:
            start_http_server(op.metrics_port, registry=metrics.registry)
        reconciler = Reconciler(op, ApiWriter(api), metrics)
        memo.api = api
        memo.reconciler = reconciler
        memo.task = asyncio.create_task(reconciler.run(), name="reconciler")
        reconciler.mark_dirty()

    @kopf.on.cleanup(registry=registry)
    async def cleanup(memo: kopf.Memo, **_: Any) -> None:
        task = memo.get("task")
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if memo.get("api") is not None:
            await memo.api.close()

    def on_resource(event: kopf.RawEvent, memo: Any) -> None:
        reconciler: Reconciler = memo.reconciler
        body: dict[str, Any] = dict(event["object"])
        if event["type"] == "DELETED":
            meta = body["metadata"]
            reconciler.index.remove_resource(body["kind"], meta.get("namespace", "default"), meta["name"])
            reconciler.forget(f"{body['kind']}/{meta.get('namespace', 'default')}/{meta['name']}")
            reconciler.mark_dirty()
            return
        changed = reconciler.index.spec_changed(body)
        reconciler.index.upsert_resource(body)
        if changed:
            reconciler.mark_dirty()

    @kopf.on.event(GROUP, VERSION, "vocelioservices", registry=registry)
    def vocelio_service_event(event: kopf.RawEvent, memo: Any, **_: Any) -> None:
        on_resource(event, memo)

    @kopf.on.event(GROUP, VERSION, "ratetiers", registry=registry)
    def rate_tier_event(event: kopf.RawEvent, memo: Any, **_: Any) -> None:
        on_resource(event, memo)

    @kopf.on.event("discovery.k8s.io", "v1", "endpointslices", registry=registry)
    def endpoint_slice_event(event: kopf.RawEvent, memo: Any, **_: Any) -> None:
        reconciler: Reconciler = memo.reconciler
        body: dict[str, Any] = dict(event["object"])
        deleted = event["type"] == "DELETED"
        key = reconciler.index.remove_slice(body) if deleted else reconciler.index.upsert_slice(body)
        if key is not None and key in reconciler.index.referenced_services():
            log.debug("endpoint slice event", extra={"fields": {"service": "/".join(key)}})
            reconciler.mark_dirty()

    @kopf.on.event("", "v1", "secrets", labels={settings.api_key_label: "true"}, registry=registry)
    def api_key_secret_event(event: kopf.RawEvent, memo: Any, **_: Any) -> None:
        reconciler: Reconciler = memo.reconciler
        body: dict[str, Any] = dict(event["object"])
        meta = body["metadata"]
        if event["type"] == "DELETED":
            reconciler.index.remove_api_key_secret(meta.get("namespace", "default"), meta["name"])
        else:
            reconciler.index.upsert_api_key_secret(body)
        reconciler.mark_dirty()

    return registry


async def run_operator(settings: OperatorSettings) -> None:
    memo = kopf.Memo(op_settings=settings)
    namespaces = settings.namespaces
    await kopf.operator(
        registry=build_registry(settings), memo=memo, clusterwide=not namespaces, namespaces=namespaces,
        liveness_endpoint=f"http://0.0.0.0:{settings.liveness_port}/healthz" if settings.liveness_port else None,
        peering_name=settings.peering, priority=settings.priority,
    )
