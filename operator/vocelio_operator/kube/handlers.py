"""The kopf edge: a registry (not kopf's global one) with login, startup and
cleanup handlers and the watch-event handlers that feed the reconciler's
index. `run_operator` starts kopf with peering and a liveness endpoint."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

import kopf
from kubernetes_asyncio import client, config
from prometheus_client import start_http_server

from vocelio_operator.kube.keywatch import watch_key_secrets
from vocelio_operator.kube.metrics import OperatorMetrics
from vocelio_operator.kube.reconciler import Reconciler
from vocelio_operator.kube.writer import ApiWriter
from vocelio_operator.model.resources import GROUP, VERSION
from vocelio_operator.settings import OperatorSettings
from vocelio_operator.translation.tenancy.grants import GRANT_GROUP, GRANT_VERSION
from vocelio_operator.translation.tenancy.policy import key_namespaces

log = logging.getLogger("vocelio.operator")


async def _api_client() -> client.ApiClient:
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        await config.load_kube_config()
    return client.ApiClient()


def build_registry(settings: OperatorSettings) -> kopf.OperatorRegistry:  # noqa: C901 - handler declarations
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        op: OperatorSettings = memo.op_settings
        settings.peering.name = op.peering
        settings.peering.priority = op.priority
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
        # API-key Secrets only where keys may live (a Role each), not through kopf's cluster-wide watch.
        memo.key_tasks = [asyncio.create_task(watch_key_secrets(api, ns, op.api_key_label,
                                                                 _keys_listed(reconciler), _key_changed(reconciler)),
                                              name=f"api-keys/{ns}")
                          for ns in key_namespaces(op.tenancy, op.config_namespace)]
        reconciler.mark_dirty()

    @kopf.on.cleanup(registry=registry)
    async def cleanup(memo: kopf.Memo, **_: Any) -> None:
        tasks = [t for t in [memo.get("task"), *(memo.get("key_tasks") or [])] if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
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

    @kopf.on.event(GRANT_GROUP, GRANT_VERSION, "referencegrants", registry=registry)
    def reference_grant_event(event: kopf.RawEvent, memo: Any, **_: Any) -> None:
        # A grant given or taken back re-renders every service that references across namespaces.
        reconciler: Reconciler = memo.reconciler
        body: dict[str, Any] = dict(event["object"])
        meta = body["metadata"]
        if event["type"] == "DELETED":
            reconciler.index.remove_grant(meta.get("namespace", "default"), meta["name"])
        else:
            reconciler.index.upsert_grant(body)
        reconciler.mark_dirty()

    return registry


def _keys_listed(reconciler: Reconciler) -> Callable[[str, list[Mapping[str, Any]]], None]:
    def listed(namespace: str, bodies: list[Mapping[str, Any]]) -> None:
        reconciler.index.replace_api_key_secrets(namespace, bodies)
        reconciler.mark_dirty()
    return listed


def _key_changed(reconciler: Reconciler) -> Callable[[str, Mapping[str, Any]], None]:
    def changed(kind: str, body: Mapping[str, Any]) -> None:
        meta = body["metadata"]
        if kind == "DELETED":
            reconciler.index.remove_api_key_secret(meta.get("namespace", "default"), meta["name"])
        else:
            reconciler.index.upsert_api_key_secret(body)
        reconciler.mark_dirty()
    return changed


async def run_operator(settings: OperatorSettings) -> None:
    memo = kopf.Memo(op_settings=settings)
    namespaces = settings.namespaces
    await kopf.operator(
        registry=build_registry(settings), memo=memo, clusterwide=not namespaces, namespaces=namespaces,
        liveness_endpoint=f"http://0.0.0.0:{settings.liveness_port}/healthz" if settings.liveness_port else None,
        peering_name=settings.peering, priority=settings.priority,
    )
