"""Writes to the Kubernetes API for the reconciler: the config ConfigMap(s)
(only when the content hash changed), the API-key hash Secret, status
subresources, and Events. The only operator module that talks to the API
besides kopf itself."""

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


class ApiWriter:
    def __init__(self, api: client.ApiClient, component: str = "vocelio-operator") -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.discovery = client.DiscoveryV1Api(api)
        self.component = component

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
