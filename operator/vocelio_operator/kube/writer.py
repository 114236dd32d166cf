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
from vocelio_operator.translation.tenancy.grants import GRANT_GROUP, GRANT_VERSION

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

    async def list_snapshot(self, namespaces: list[str], api_key_label: str,
                            key_namespaces: list[str] | None = None) -> dict[str, list[dict[str, Any]]]:
        """Everything the renderer needs, listed once at start-up so the first render
        is complete (watch events then keep it current). API-key Secrets are listed only in
        `key_namespaces` when given (the operator may read Secrets nowhere else)."""
        out: dict[str, list[dict[str, Any]]] = {"resources": [], "slices": [], "secrets": [], "grants": []}
        scopes: list[str | None] = list(namespaces) or [None]
        for ns in scopes:
            for plural in PLURALS.values():
                if ns is None:
                    listed = await self.custom.list_cluster_custom_object(GROUP, VERSION, plural)
                else:
                    listed = await self.custom.list_namespaced_custom_object(GROUP, VERSION, ns, plural)
                out["resources"].extend(listed["items"])
            slices = await (self.discovery.list_endpoint_slice_for_all_namespaces() if ns is None
                            else self.discovery.list_namespaced_endpoint_slice(ns))
            out["slices"].extend(self.api.sanitize_for_serialization(slices)["items"])
            out["grants"].extend(await self.list_grants(ns))
            if key_namespaces is not None:
                continue
            selector = f"{api_key_label}=true"
            secrets = await (self.core.list_secret_for_all_namespaces(label_selector=selector) if ns is None
                             else self.core.list_namespaced_secret(ns, label_selector=selector))
            out["secrets"].extend(self.api.sanitize_for_serialization(secrets)["items"])
        for ns in key_namespaces or []:
            out["secrets"].extend(await self.list_key_secrets(ns, api_key_label))
        return out

    async def list_key_secrets(self, namespace: str, api_key_label: str) -> list[dict[str, Any]]:
        """The API-key Secrets of one namespace (none when it does not exist)."""
        try:
            listed = await self.core.list_namespaced_secret(namespace, label_selector=f"{api_key_label}=true")
        except ApiException as exc:
            if exc.status == 404:
                return []
            raise
        items: list[dict[str, Any]] = self.api.sanitize_for_serialization(listed)["items"]
        return items

    async def list_grants(self, namespace: str | None) -> list[dict[str, Any]]:
        """ReferenceGrants (none when their CRD is not installed: then nothing is granted)."""
        try:
            if namespace is None:
                listed = await self.custom.list_cluster_custom_object(GRANT_GROUP, GRANT_VERSION, "referencegrants")
            else:
                listed = await self.custom.list_namespaced_custom_object(GRANT_GROUP, GRANT_VERSION, namespace,
                                                                         "referencegrants")
        except ApiException as exc:
            if exc.status == 404:
                return []
            raise
        items: list[dict[str, Any]] = listed["items"]
        return items

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
