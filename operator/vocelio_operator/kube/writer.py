"""Writes to the Kubernetes API for the reconciler: the config ConfigMap(s)
(only when the content hash changed), the API-key hash Secret, status
subresources, and Events; and the one read besides kopf's own: which objects of
a kind still exist (`live_uids`, metadata only), to check kopf's indexes against.
The only operator module that talks to the API besides kopf itself (and the
API-key watch)."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from vocelio_operator.model.resources import GROUP, VERSION
from vocelio_operator.translation.cluster_index import ResourceRef

log = logging.getLogger("vocelio.operator.writer")

HASH_ANNOTATION = "gateway.vocelio.ai/config-hash"
MANAGED_LABELS = {"app.kubernetes.io/managed-by": "vocelio-operator", "app.kubernetes.io/part-of": "vocelio-gateway"}
PLURALS = {"VocelioService": "vocelioservices", "RateTier": "ratetiers"}
#: A listing of metadata only: the uids, not the objects (an EndpointSlice list can be large).
METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"
_PAGE = 500


class ApiWriter:
    def __init__(self, api: client.ApiClient, component: str = "vocelio-operator") -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.discovery = client.DiscoveryV1Api(api)
        self.component = component

    async def live_uids(self, kind: tuple[str, str, str], namespace: str | None) -> set[str]:
        """The uids of every object of `kind` (group, version, plural) that exists now, in
        `namespace` or (None) in all namespaces; a kind the server does not serve has none."""
        group, version, plural = kind
        base = f"/apis/{group}/{version}"
        path = f"{base}/namespaces/{namespace}/{plural}" if namespace else f"{base}/{plural}"
        uids: set[str] = set()
        token = ""
        while True:
            query: list[tuple[str, Any]] = [("limit", _PAGE)] + ([("continue", token)] if token else [])
            try:
                page: Any = await self.api.call_api(
                    path, "GET", query_params=query, header_params={"Accept": METADATA_LIST},
                    response_types_map={200: "object"}, auth_settings=["BearerToken"],
                    _return_http_data_only=True)
            except ApiException as exc:
                if exc.status == 404:  # the kind's CRD is gone, and with it every object of the kind
                    return uids
                raise
            uids.update(str((item.get("metadata") or {}).get("uid") or "") for item in page.get("items") or [])
            token = str((page.get("metadata") or {}).get("continue") or "")
            if not token:
                return uids - {""}

    async def peering_status(self, plural: str, namespace: str | None, name: str) -> dict[str, Any]:
        """The status of kopf's peering object (one entry per replica); empty when it does not exist."""
        try:
            if namespace:
                body: Any = await self.custom.get_namespaced_custom_object("kopf.dev", "v1", namespace, plural, name)
            else:
                body = await self.custom.get_cluster_custom_object("kopf.dev", "v1", plural, name)
        except ApiException as exc:
            if exc.status == 404:
                return {}
            raise
        status = body.get("status") if isinstance(body, dict) else None
        return status if isinstance(status, dict) else {}

    async def current_config_hash(self, namespace: str, name: str) -> str | None:
        try:
            cm = await self.core.read_namespaced_config_map(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return (cm.metadata.annotations or {}).get(HASH_ANNOTATION)

    async def apply_configmaps(self, namespace: str, shards: dict[str, dict[str, str]], config_hash: str,
                               base_name: str) -> int:
        """Create or replace each ConfigMap whose hash differs; delete parts no longer used.
        Parts are written before the first ConfigMap, so a reader never sees a manifest
        whose parts are missing. Returns the number of objects written."""
        written = 0
        ordered = sorted(shards, key=lambda n: (n == base_name, n))
        for name in ordered:
            body = client.V1ConfigMap(metadata=client.V1ObjectMeta(
                name=name, namespace=namespace, labels={**MANAGED_LABELS, "gateway.vocelio.ai/config": base_name},
                annotations={HASH_ANNOTATION: config_hash}), data=shards[name])
            try:
                existing = await self.core.read_namespaced_config_map(name, namespace)
            except ApiException as exc:
                if exc.status != 404:
                    raise
                await self.core.create_namespaced_config_map(namespace, body)
                written += 1
                continue
            same_hash = (existing.metadata.annotations or {}).get(HASH_ANNOTATION) == config_hash
            if same_hash and existing.data == shards[name]:
                continue
            body.metadata.resource_version = existing.metadata.resource_version
            await self.core.replace_namespaced_config_map(name, namespace, body)
            written += 1
        listed = await self.core.list_namespaced_config_map(
            namespace, label_selector=f"gateway.vocelio.ai/config={base_name}")
        for cm in listed.items:
            if cm.metadata.name not in shards:
                await self.core.delete_namespaced_config_map(cm.metadata.name, namespace)
        return written

    async def apply_secret(self, namespace: str, name: str, data: dict[str, str], digest: str) -> bool:
        body = client.V1Secret(metadata=client.V1ObjectMeta(
            name=name, namespace=namespace, labels=dict(MANAGED_LABELS), annotations={HASH_ANNOTATION: digest}),
            string_data=data, type="Opaque")
        try:
            existing = await self.core.read_namespaced_secret(name, namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            await self.core.create_namespaced_secret(namespace, body)
            return True
        if (existing.metadata.annotations or {}).get(HASH_ANNOTATION) == digest:
            return False
        await self.core.replace_namespaced_secret(name, namespace, body)
        return True

    async def patch_status(self, ref: ResourceRef, status: dict[str, Any]) -> None:
        try:
            await self.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, ref.namespace, PLURALS[ref.kind], ref.name, {"status": status},
                _content_type="application/merge-patch+json")  # type: ignore[call-arg]
        except ApiException as exc:
            if exc.status != 404:  # deleted meanwhile: nothing to report on
                raise

    async def post_secret_event(self, namespace: str, name: str, uid: str, event_type: str, reason: str,
                                message: str) -> None:
        """An Event about a Secret (an API key not published, and why: never the key's data)."""
        now = dt.datetime.now(dt.UTC)
        event = client.CoreV1Event(
            metadata=client.V1ObjectMeta(generate_name=f"{name}.", namespace=namespace),
            involved_object=client.V1ObjectReference(api_version="v1", kind="Secret", name=name,
                                                     namespace=namespace, uid=uid or None),
            reason=reason, message=message[:1024], type=event_type, first_timestamp=now, last_timestamp=now,
            count=1, source=client.V1EventSource(component=self.component))
        try:
            await self.core.create_namespaced_event(namespace, event)
        except ApiException as exc:
            log.warning("event not posted", extra={"fields": {"status": exc.status, "object": name}})

    async def post_event(self, ref: ResourceRef, event_type: str, reason: str, message: str) -> None:
        now = dt.datetime.now(dt.UTC)
        event = client.CoreV1Event(
            metadata=client.V1ObjectMeta(generate_name=f"{ref.name}.", namespace=ref.namespace),
            involved_object=client.V1ObjectReference(
                api_version=f"{GROUP}/{VERSION}", kind=ref.kind, name=ref.name, namespace=ref.namespace,
                uid=ref.uid),
            reason=reason, message=message[:1024], type=event_type, first_timestamp=now, last_timestamp=now,
            count=1, source=client.V1EventSource(component=self.component))
        try:
            await self.core.create_namespaced_event(ref.namespace, event)
        except ApiException as exc:
            log.warning("event not posted", extra={"fields": {"status": exc.status, "object": ref.name}})
