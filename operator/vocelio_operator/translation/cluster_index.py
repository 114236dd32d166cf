"""The operator's in-memory view of the cluster: VocelioServices, RateTiers and
the EndpointSlices of referenced Services, fed by watch events and read by the
reconciler. Pure (dict bodies in, renderer input out); kopf calls it from the
event handlers."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from vocelio_contract.apikeys import ApiKeyRecord, record_from_secret_data
from vocelio_operator.model.resources import (
    DiscoveredEndpoint,
    RateTierResource,
    VocelioServiceResource,
    is_service,
    parse_resource,
)
from vocelio_operator.translation.rendering import EndpointIndex
from vocelio_operator.translation.tenancy.grants import ReferenceGrant, parse_grant

SERVICE_NAME_LABEL = "kubernetes.io/service-name"


#: Bounds of a key's metadata: every proxy holds every published record.
MAX_KEY_TEXT = 253
MAX_KEY_ROLES = 64


def _oversized(record: ApiKeyRecord) -> str | None:
    for field_name, value in (("name", record.name), ("tenant", record.tenant or ""), ("tier", record.tier or ""),
                              *(("roles", role) for role in record.roles)):
        if len(value) > MAX_KEY_TEXT:
            return f"field {field_name} holds more than {MAX_KEY_TEXT} characters"
    if len(record.roles) > MAX_KEY_ROLES:
        return f"field roles lists more than {MAX_KEY_ROLES} roles"
    return None


class _SecretFieldError(ValueError):
    """A key Secret field that is not text; the message names the field, never its value."""


def _secret_text(data: Mapping[str, Any]) -> dict[str, str]:
    """A Secret's `data` as text. Any tenant with Secret rights in a key namespace writes these
    bytes: one that is not UTF-8 makes its own key invalid, never the listing of the namespace."""
    out: dict[str, str] = {}
    for name, value in data.items():
        try:
            out[str(name)] = base64.b64decode(value, validate=True).decode("utf-8")
        except (TypeError, ValueError):  # binascii.Error and UnicodeDecodeError are ValueErrors
            raise _SecretFieldError(f"field {str(name)[:64]!r} is not base64-encoded UTF-8 text") from None
    return out


def slice_endpoints(body: Mapping[str, Any]) -> list[DiscoveredEndpoint]:
    """Endpoints of one discovery.k8s.io/v1 EndpointSlice (IPv4/IPv6 only)."""
    if body.get("addressType") not in ("IPv4", "IPv6"):
        return []
    # The boundary of the render: only what the config model accepts gets in (the API server
    # validates slices; this keeps a malformed one from making the whole config invalid).
    ports = {(p.get("name") or ""): port for p in body.get("ports") or []
             if isinstance(port := p.get("port"), int) and 1 <= port <= 65535}
    out = []
    for ep in body.get("endpoints") or []:
        conditions = ep.get("conditions") or {}
        # The API says a missing ready condition means unknown: treat as ready.
        ready = conditions.get("ready") is not False and conditions.get("terminating") is not True
        pod = (ep.get("targetRef") or {}).get("name")
        pod = pod if isinstance(pod, str) else None
        for address in ep.get("addresses") or []:
            if not isinstance(address, str) or not address:
                continue
            # One ports mapping per slice, shared (read-only) by its endpoints.
            out.append(DiscoveredEndpoint(address=address, ready=ready, pod=pod, ports=ports))
    return out


@dataclass(frozen=True)
class ResourceRef:
    """What the reconciler needs to patch status and post Events."""

    kind: str
    namespace: str
    name: str
    uid: str
    generation: int
    conditions: tuple[dict[str, Any], ...] = ()
    status: dict[str, Any] = field(default_factory=dict)


@dataclass
class ClusterIndex:
    services: dict[str, VocelioServiceResource] = field(default_factory=dict)
    tiers: dict[str, RateTierResource] = field(default_factory=dict)
    refs: dict[str, ResourceRef] = field(default_factory=dict)
    invalid: dict[str, str] = field(default_factory=dict)
    slices: dict[tuple[str, str], dict[str, list[DiscoveredEndpoint]]] = field(default_factory=dict)
    api_keys: dict[str, ApiKeyRecord] = field(default_factory=dict)
    api_key_problems: dict[str, str] = field(default_factory=dict)
    #: "namespace/name" of each API-key Secret -> its uid (Events about it name the object).
    api_key_uids: dict[str, str] = field(default_factory=dict)
    #: "namespace/name" -> ReferenceGrant (gateway.networking.k8s.io).
    grants: dict[str, ReferenceGrant] = field(default_factory=dict)

    def upsert_grant(self, body: Mapping[str, Any]) -> None:
        grant = parse_grant(body)
        self.grants[f"{grant.namespace}/{grant.name}"] = grant

    def remove_grant(self, namespace: str, name: str) -> None:
        self.grants.pop(f"{namespace}/{name}", None)

    def grants_by_namespace(self) -> dict[str, list[ReferenceGrant]]:
        out: dict[str, list[ReferenceGrant]] = {}
        for grant in self.grants.values():
            out.setdefault(grant.namespace, []).append(grant)
        return out

    def replace_api_key_secrets(self, namespace: str, bodies: list[Mapping[str, Any]]) -> None:
        """A fresh listing of one namespace's key Secrets replaces what the index held for it."""
        for key in [k for k in {**self.api_keys, **self.api_key_problems} if k.split("/", 1)[0] == namespace]:
            self.remove_api_key_secret(*key.split("/", 1))
        for body in bodies:
            self.upsert_api_key_secret(body)

    def upsert_api_key_secret(self, body: Mapping[str, Any]) -> None:
        meta = body["metadata"]
        key = f"{meta.get('namespace', 'default')}/{meta['name']}"
        self.api_key_uids[key] = str(meta.get("uid") or "")
        problem = None
        try:
            record = record_from_secret_data(_secret_text(body.get("data") or {}))
        except _SecretFieldError as exc:
            problem = str(exc)
        except KeyError as exc:
            problem = f"field {exc.args[0]} is missing"
        except ValidationError as exc:
            problem = "; ".join(f"field {'.'.join(map(str, e['loc'])) or 'record'}: {e['msg']}" for e in exc.errors())
        except (ValueError, TypeError):
            problem = "field expiresAt is not an ISO 8601 date and time"
        else:
            problem = _oversized(record)
        if problem is not None:
            # Never the values: a key Secret's fields are credentials (the hash) and the message
            # becomes an Event anyone who may read Events in that namespace sees.
            self.api_keys.pop(key, None)
            self.api_key_problems[key] = f"invalid API key Secret: {problem}"[:512]
            return
        self.api_keys[key] = record
        self.api_key_problems.pop(key, None)

    def remove_api_key_secret(self, namespace: str, name: str) -> None:
        self.api_keys.pop(f"{namespace}/{name}", None)
        self.api_key_problems.pop(f"{namespace}/{name}", None)
        self.api_key_uids.pop(f"{namespace}/{name}", None)

    def api_keys_document(self, refused: Collection[str] = ()) -> tuple[str, str]:
        """The proxies' keys file (hashes and metadata only) and its digest, without the
        Secrets named in `refused` ("namespace/name": outside their namespace's allowance)."""
        records = sorted((r.model_dump(mode="json") for k, r in self.api_keys.items() if k not in refused),
                         key=lambda r: r["id"])
        text = json.dumps(records, sort_keys=True, indent=1) + "\n"
        return text, hashlib.sha256(text.encode()).hexdigest()

    def spec_changed(self, body: Mapping[str, Any]) -> bool:
        """False when only status moved (our own patch echoing back)."""
        meta = body["metadata"]
        key = f"{body['kind']}/{meta.get('namespace', 'default')}/{meta['name']}"
        ref = self.refs.get(key)
        return ref is None or ref.generation != int(meta.get("generation") or 1) or ref.uid != meta.get("uid", "")

    def upsert_resource(self, body: Mapping[str, Any]) -> str:
        kind = body["kind"]
        meta = body["metadata"]
        key = f"{kind}/{meta.get('namespace', 'default')}/{meta['name']}"
        status = body.get("status") or {}
        self.refs[key] = ResourceRef(kind, meta.get("namespace", "default"), meta["name"], meta.get("uid", ""),
                                     int(meta.get("generation") or 1), tuple(status.get("conditions") or ()),
                                     dict(status))
        self.services.pop(key, None)
        self.tiers.pop(key, None)
        self.invalid.pop(key, None)
        try:
            res = parse_resource(dict(body))
        except ValueError as exc:
            self.invalid[key] = str(exc)
            return key
        if is_service(res):
            self.services[key] = res
        else:
            self.tiers[key] = res
        return key

    def remove_resource(self, kind: str, namespace: str, name: str) -> None:
        key = f"{kind}/{namespace}/{name}"
        for table in (self.services, self.tiers, self.refs, self.invalid):
            table.pop(key, None)

    def upsert_slice(self, body: Mapping[str, Any]) -> tuple[str, str] | None:
        meta = body["metadata"]
        service = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
        if not service:
            return None
        key = (meta.get("namespace", "default"), service)
        self.slices.setdefault(key, {})[meta["name"]] = slice_endpoints(body)
        return key

    def remove_slice(self, body: Mapping[str, Any]) -> tuple[str, str] | None:
        meta = body["metadata"]
        service = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
        if not service:
            return None
        key = (meta.get("namespace", "default"), service)
        slices = self.slices.get(key, {})
        slices.pop(meta["name"], None)
        if not slices:
            self.slices.pop(key, None)
        return key

    def referenced_services(self) -> set[tuple[str, str]]:
        refs = set()
        for res in self.services.values():
            for backend in res.spec.backends:
                if backend.service_ref is not None:
                    refs.add((backend.service_ref.namespace or res.metadata.namespace, backend.service_ref.name))
        return refs

    def endpoint_index(self) -> EndpointIndex:
        out: dict[tuple[str, str], list[DiscoveredEndpoint]] = {}
        for key, slices in self.slices.items():
            merged: list[DiscoveredEndpoint] = []
            for name in sorted(slices):
                merged.extend(slices[name])
            out[key] = merged
        return out

    def endpoints_tracked(self) -> int:
        return sum(len(eps) for slices in self.slices.values() for eps in slices.values())
