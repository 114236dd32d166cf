"""The kopf edge: a registry (not kopf's global one) with the login, startup and
cleanup handlers, kopf indexes of every kind the renderer reads, and the handlers
that wake the reconciler. kopf lists and watches each indexed kind once, fills the
indexes, and holds every other handler until all of them are filled; it stops
delivering events while this replica is paused by peering. So the reconciler
renders from the indexes (its own listings are metadata only: which indexed
objects still exist), activates on the first event of the peering object (the
indexes are filled and this replica holds the peering; again on every listing of
it, which kopf repeats after every pause) and pauses when that object shows a
live peer with a higher priority (an event may be lost as kopf pauses: the
reconciler also reads the object before each pass). API-key Secrets are read only where keys may live, by
`keywatch` (a Role per namespace, not kopf's cluster-wide watch). The memo is typed
(`OperatorMemo`); credentials come from one loader (`kube.credentials`) for kopf and
the writer; peering is configured once, here. `run_operator` starts kopf."""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf
from kubernetes_asyncio import client
from prometheus_client import start_http_server

from vocelio_operator.kube.credentials import connection_info, load_configuration
from vocelio_operator.kube.keywatch import watch_key_secrets
from vocelio_operator.kube.metrics import OperatorMetrics
from vocelio_operator.kube.peering import outranked
from vocelio_operator.kube.reconciler import Indexes, Reconciler
from vocelio_operator.kube.writer import ApiWriter
from vocelio_operator.model.resources import GROUP, VERSION
from vocelio_operator.settings import OperatorSettings
from vocelio_operator.translation.indexing import (
    IndexedResource,
    IndexedSlice,
    ServiceKey,
    grant_entry,
    resource_entry,
    slice_entry,
)
from vocelio_operator.translation.tenancy.grants import GRANT_GROUP, GRANT_VERSION, ReferenceGrant
from vocelio_operator.translation.tenancy.policy import key_namespaces

log = logging.getLogger("vocelio.operator")


class IndexActivity:
    """When kopf last changed an index. kopf releases its other handlers once the first
    listing of every indexed kind has arrived, and re-lists every kind when a peering
    pause ends; the objects of such a listing are indexed by concurrent workers, so the
    reconciler renders its first view only once the indexes have been quiet a moment."""

    def __init__(self) -> None:
        self._last = 0.0

    def touch(self) -> None:
        self._last = time.monotonic()

    async def settle(self, quiet_s: float = 0.5, limit_s: float = 15.0) -> None:
        """Return once no index changed for `quiet_s` (or after `limit_s` in all)."""
        deadline = time.monotonic() + limit_s
        while (now := time.monotonic()) < deadline and now - self._last < quiet_s:  # noqa: ASYNC110 - a quiet period, not a condition to wait for
            await asyncio.sleep(quiet_s - (now - self._last))


@dataclass
class OperatorMemo:
    """kopf's memo for this operator. kopf gives each watched object a shallow copy, so
    the fields below are shared by all of them; they are set by the startup handler."""

    settings: OperatorSettings
    api: client.ApiClient | None = None
    reconciler: Reconciler | None = None
    task: asyncio.Task[None] | None = None
    key_tasks: list[asyncio.Task[None]] = field(default_factory=list)
    #: Shared by every object's copy of the memo (kopf copies it shallowly).
    indexing: IndexActivity = field(default_factory=IndexActivity)

    def running(self) -> Reconciler:
        if self.reconciler is None:  # kopf runs resource handlers only after startup
            raise kopf.TemporaryError("the operator is still starting", delay=1)
        return self.reconciler


def plain(value: Any) -> Any:
    """kopf's body views as plain dicts and lists (the resource models want plain data)."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def build_registry(settings: OperatorSettings) -> kopf.OperatorRegistry:  # noqa: C901 - handler declarations
    registry = kopf.OperatorRegistry()
    # kopf pauses every replica whose priority equals another's, so the chart's replicas (started without
    # one) would all stand by and stop reconciling: they draw distinct random negative priorities instead,
    # so exactly one is active and any replica given --priority (> 0) wins. Used by kopf and the reconciler.
    priority = settings.priority or -(secrets.randbelow(2**31 - 2) + 1)
    peering_plural = "kopfpeerings" if settings.namespaces else "clusterkopfpeerings"
    peering_namespace = settings.namespaces[0] if settings.namespaces else None

    @kopf.on.login(registry=registry)
    async def login(**_: Any) -> kopf.ConnectionInfo:
        return await connection_info(await load_configuration())

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, memo: OperatorMemo, **kwargs: Any) -> None:
        op = memo.settings
        # Peering, configured here only: replicas with one name elect one active replica.
        settings.peering.name = op.peering
        settings.peering.priority = priority
        settings.peering.lifetime = int(op.peering_lifetime_s)
        settings.peering.mandatory = True
        settings.posting.level = logging.WARNING
        # Our handlers only wake the reconciler, which coalesces, so kopf's own per-object
        # batching would only add latency.
        settings.batching.batch_window = 0.01
        settings.watching.server_timeout = 300
        settings.watching.client_timeout = 330
        api = memo.api = client.ApiClient(await load_configuration())
        metrics = OperatorMetrics()
        if op.metrics_port:
            start_http_server(op.metrics_port, registry=metrics.registry)
        # kopf passes each index to every handler under its id.
        services: kopf.Index[str, IndexedResource] = kwargs["vocelio_services"]
        tiers: kopf.Index[str, IndexedResource] = kwargs["rate_tiers"]
        slices: kopf.Index[ServiceKey, IndexedSlice] = kwargs["endpoint_slices"]
        grants: kopf.Index[str, ReferenceGrant] = kwargs["reference_grants"]
        indexes = Indexes(resources=collections.ChainMap(services, tiers),  # type: ignore[arg-type]
                          slices=slices, grants=grants)
        writer = ApiWriter(api)

        async def outranked_now() -> bool:
            status = await writer.peering_status(peering_plural, peering_namespace, op.peering)
            return outranked(status, priority, dt.datetime.now(dt.UTC))

        reconciler = memo.reconciler = Reconciler(op, writer, metrics, indexes, memo.indexing.settle,
                                                  outranked_now)
        memo.task = asyncio.create_task(reconciler.run(), name="reconciler")
        # API-key Secrets only where keys may live (a Role each), not through kopf's cluster-wide watch.
        memo.key_tasks = [asyncio.create_task(watch_key_secrets(api, ns, op.api_key_label,
                                                                 _keys_listed(reconciler), _key_changed(reconciler)),
                                              name=f"api-keys/{ns}")
                          for ns in key_namespaces(op.tenancy, op.config_namespace)]

    @kopf.on.cleanup(registry=registry)
    async def cleanup(memo: OperatorMemo, **_: Any) -> None:
        tasks = [t for t in [memo.task, *memo.key_tasks] if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if memo.api is not None:
            await memo.api.close()

    # -- indexes: what the renderer reads, filled by kopf before any handler below runs --

    @kopf.index(GROUP, VERSION, "vocelioservices", registry=registry, id="vocelio_services")
    def vocelio_services(body: kopf.Body, memo: OperatorMemo, **_: Any) -> dict[str, IndexedResource]:
        memo.indexing.touch()
        return resource_entry(plain(body))

    @kopf.index(GROUP, VERSION, "ratetiers", registry=registry, id="rate_tiers")
    def rate_tiers(body: kopf.Body, memo: OperatorMemo, **_: Any) -> dict[str, IndexedResource]:
        memo.indexing.touch()
        return resource_entry(plain(body))

    @kopf.index("discovery.k8s.io", "v1", "endpointslices", registry=registry, id="endpoint_slices")
    def endpoint_slices(body: kopf.Body, memo: OperatorMemo, **_: Any) -> dict[ServiceKey, IndexedSlice] | None:
        memo.indexing.touch()
        return slice_entry(plain(body))

    @kopf.index(GRANT_GROUP, GRANT_VERSION, "referencegrants", registry=registry, id="reference_grants")
    def reference_grants(body: kopf.Body, memo: OperatorMemo, **_: Any) -> dict[str, ReferenceGrant]:
        memo.indexing.touch()
        return grant_entry(plain(body))

    # -- the peering object: this replica's activation, and its pause ------------------

    def this_peering(name: str, namespace: str | None, **_: Any) -> bool:
        return name == settings.peering and (not settings.namespaces or namespace == settings.namespaces[0])

    @kopf.on.event("kopf.dev", "v1", peering_plural, registry=registry, when=this_peering)
    def peering_event(event: kopf.RawEvent, memo: OperatorMemo, **_: Any) -> None:
        reconciler = memo.running()
        status = (event["object"] or {}).get("status") or {}
        if outranked(status, priority, dt.datetime.now(dt.UTC)):
            reconciler.deactivate()
        elif event["type"] != "DELETED":
            # A listing (type None): kopf listed again, as after every pause, which this replica may
            # have missed (kopf stops this watch as it pauses): start afresh.
            reconciler.activate(relisted=event["type"] is None)

    # -- changes: wake the reconciler (it renders from the indexes) ----------------------

    def on_resource(event: kopf.RawEvent, memo: OperatorMemo) -> None:
        reconciler = memo.running()
        body: dict[str, Any] = dict(event["object"])
        meta = body["metadata"]
        if event["type"] == "DELETED":
            reconciler.forget(f"{body['kind']}/{meta.get('namespace', 'default')}/{meta['name']}")
            reconciler.mark_dirty()
        elif reconciler.index.spec_changed(body):  # not our own status patch echoing back
            reconciler.mark_dirty()

    @kopf.on.event(GROUP, VERSION, "vocelioservices", registry=registry)
    def vocelio_service_event(event: kopf.RawEvent, memo: OperatorMemo, **_: Any) -> None:
        on_resource(event, memo)

    @kopf.on.event(GROUP, VERSION, "ratetiers", registry=registry)
    def rate_tier_event(event: kopf.RawEvent, memo: OperatorMemo, **_: Any) -> None:
        on_resource(event, memo)

    @kopf.on.event("discovery.k8s.io", "v1", "endpointslices", registry=registry)
    def endpoint_slice_event(event: kopf.RawEvent, memo: OperatorMemo, **_: Any) -> None:
        reconciler = memo.running()
        entry = slice_entry(plain(event["object"]))
        if entry and next(iter(entry)) in reconciler.index.referenced_services():
            reconciler.mark_dirty()

    @kopf.on.event(GRANT_GROUP, GRANT_VERSION, "referencegrants", registry=registry)
    def reference_grant_event(memo: OperatorMemo, **_: Any) -> None:
        # A grant given or taken back re-renders every service that references across namespaces.
        memo.running().mark_dirty()

    return registry


def _keys_listed(reconciler: Reconciler) -> Callable[[str, list[Mapping[str, Any]]], None]:
    def listed(namespace: str, bodies: list[Mapping[str, Any]]) -> None:
        reconciler.index.replace_api_key_secrets(namespace, bodies)
        reconciler.keys_listed(namespace)
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
    namespaces = settings.namespaces
    await kopf.operator(
        registry=build_registry(settings), memo=OperatorMemo(settings), clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=f"http://0.0.0.0:{settings.liveness_port}/healthz" if settings.liveness_port else None,
    )
