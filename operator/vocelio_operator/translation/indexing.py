"""What the operator's kopf indexes hold, and the cluster view rebuilt from them.
kopf fills its indexes from its own LIST and watch of each kind, and holds every
other handler until all of them are filled, so a view built from the indexes is
complete by construction (no second LIST at start). `resource_entry` and
`slice_entry`, `grant_entry` and `secret_entry` are the pure cores of the `@kopf.index`
functions in `kube.handlers` (API-key Secrets may instead be listed per namespace by
`kube.keywatch`);
`refresh` puts the indexes' content into the reconciler's `ClusterIndex` before a
render (API-key records and anything else the index holds are left as they are).

kopf removes an object from its indexes only when it sees the object's DELETED
event; when it lists a kind again (after a peering pause, or when a watch's
resourceVersion expired) it does not drop what the new listing no longer holds.
So the indexes can keep objects deleted while no watch ran. `indexed_uids` says
which objects (by uid) the indexes hold, per kind and namespace, so that the
reconciler can check them against a fresh listing; `refresh` leaves out the uids
found `gone`."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from vocelio_contract.apikeys import ApiKeyRecord
from vocelio_operator.model.resources import (
    GROUP,
    VERSION,
    DiscoveredEndpoint,
    RateTierResource,
    VocelioServiceResource,
    is_service,
)
from vocelio_operator.translation.cluster_index import ClusterIndex, ResourceRef
from vocelio_operator.translation.tenancy.grants import GRANT_GROUP, GRANT_VERSION, ReferenceGrant, parse_grant

#: (namespace, Service name) an EndpointSlice belongs to.
ServiceKey = tuple[str, str]
#: (API group, version, plural) of an indexed kind: what to list to check the index against.
Kind = tuple[str, str, str]
SLICES: Kind = ("discovery.k8s.io", "v1", "endpointslices")
GRANTS: Kind = (GRANT_GROUP, GRANT_VERSION, "referencegrants")
#: The kind of an indexed VocelioService or RateTier, by its `ResourceRef.kind`.
RESOURCE_KINDS: dict[str, Kind] = {"VocelioService": (GROUP, VERSION, "vocelioservices"),
                                   "RateTier": (GROUP, VERSION, "ratetiers")}


@dataclass(frozen=True)
class IndexedResource:
    """One VocelioService or RateTier as indexed: its reference (for status), and the
    parsed resource or the problem that kept it out of the render."""

    key: str
    ref: ResourceRef
    resource: VocelioServiceResource | RateTierResource | None
    problem: str | None


@dataclass(frozen=True)
class IndexedSlice:
    """One EndpointSlice as indexed: its name, its endpoints and its uid."""

    name: str
    endpoints: tuple[DiscoveredEndpoint, ...]
    uid: str = ""


def resource_entry(body: Mapping[str, Any]) -> dict[str, IndexedResource]:
    """{key: entry} for a VocelioService or RateTier body (parsed with the index's own rules)."""
    scratch = ClusterIndex()
    key = scratch.upsert_resource(body)
    resource = scratch.services.get(key) or scratch.tiers.get(key)
    return {key: IndexedResource(key, scratch.refs[key], resource, scratch.invalid.get(key))}


def slice_entry(body: Mapping[str, Any]) -> dict[ServiceKey, IndexedSlice] | None:
    """{(namespace, service): entry} for an EndpointSlice; None for a slice of no Service."""
    scratch = ClusterIndex()
    key = scratch.upsert_slice(body)
    if key is None:
        return None
    name = str(body["metadata"]["name"])
    return {key: IndexedSlice(name, tuple(scratch.slices[key][name]), str(body["metadata"].get("uid") or ""))}


def grant_entry(body: Mapping[str, Any]) -> dict[str, ReferenceGrant]:
    """{"namespace/name": grant} for a ReferenceGrant."""
    grant = parse_grant(body)
    return {f"{grant.namespace}/{grant.name}": grant}


@dataclass(frozen=True)
class IndexedKey:
    """One API-key Secret as indexed: its record, or why it has none."""

    record: ApiKeyRecord | None
    problem: str | None


def secret_entry(body: Mapping[str, Any]) -> dict[str, IndexedKey]:
    """{"namespace/name": entry} for an API-key Secret."""
    scratch = ClusterIndex()
    scratch.upsert_api_key_secret(body)
    [(key, record)] = scratch.api_keys.items() or [(next(iter(scratch.api_key_problems)), None)]
    return {key: IndexedKey(record, scratch.api_key_problems.get(key))}


def indexed_uids(resources: Mapping[str, Iterable[IndexedResource]],
                 slices: Mapping[ServiceKey, Iterable[IndexedSlice]],
                 grants: Mapping[str, Iterable[ReferenceGrant]]) -> dict[Kind, dict[str, set[str]]]:
    """{kind: {namespace: uids}} of every object the indexes hold (objects without a uid
    are left out: nothing can tell whether they still exist)."""
    held: dict[Kind, dict[str, set[str]]] = {}

    def add(kind: Kind, namespace: str, uid: str) -> None:
        if uid:
            held.setdefault(kind, {}).setdefault(namespace, set()).add(uid)

    for entries in resources.values():
        for entry in entries:
            if entry.ref.kind in RESOURCE_KINDS:
                add(RESOURCE_KINDS[entry.ref.kind], entry.ref.namespace, entry.ref.uid)
    for (namespace, _), found in slices.items():
        for indexed in found:
            add(SLICES, namespace, indexed.uid)
    for values in grants.values():
        for grant in values:
            add(GRANTS, grant.namespace, grant.uid)
    return held


def refresh(index: ClusterIndex, resources: Mapping[str, Iterable[IndexedResource]],
            slices: Mapping[ServiceKey, Iterable[IndexedSlice]],
            keys: Mapping[str, Iterable[IndexedKey]] | None = None,
            grants: Mapping[str, Iterable[ReferenceGrant]] | None = None,
            gone: Collection[str] = frozenset()) -> None:
    """Replace the index's resources, references, problems and slices (and API keys and
    ReferenceGrants, when given) with the kopf indexes' content (a kopf `Index` maps a
    key to the values of every object under it), leaving out the objects whose uid is
    `gone` (deleted while no watch ran, so kopf still holds them)."""
    services: dict[str, VocelioServiceResource] = {}
    tiers: dict[str, RateTierResource] = {}
    refs: dict[str, ResourceRef] = {}
    invalid: dict[str, str] = {}
    for key, entries in resources.items():
        for entry in entries:
            if entry.ref.uid in gone:
                continue
            refs[key] = entry.ref
            if entry.problem is not None:
                invalid[key] = entry.problem
            elif entry.resource is not None and is_service(entry.resource):
                services[key] = entry.resource
            elif entry.resource is not None:
                tiers[key] = entry.resource
    index.services, index.tiers, index.refs, index.invalid = services, tiers, refs, invalid
    live_slices = {key: [s for s in entries if s.uid not in gone] for key, entries in slices.items()}
    index.slices = {key: {s.name: list(s.endpoints) for s in entries}
                    for key, entries in live_slices.items() if entries}
    if keys is not None:
        records: dict[str, ApiKeyRecord] = {}
        problems: dict[str, str] = {}
        for key, values in keys.items():
            for value in values:
                if value.record is not None:
                    records[key] = value.record
                if value.problem is not None:
                    problems[key] = value.problem
        index.api_keys, index.api_key_problems = records, problems
    if grants is not None:
        index.grants = {key: grant for key, values in grants.items() for grant in values if grant.uid not in gone}
