"""Cross-namespace consent: Gateway API `ReferenceGrant`s
(gateway.networking.k8s.io/v1beta1) parsed from watch bodies and the one
question the renderer asks of them: may a VocelioService in namespace X use
Service S in namespace Y? Pure; the operator's index stores the grants and the
renderer (`rendering._backends`) asks `reference_permitted`.

The semantics are Gateway API's: a grant lives in the namespace that is
referenced (the owner of the Service consents, never the referrer); `from`
names the referring group, kind and namespace; `to` names the referenced group
and kind and optionally one name. Matching is exact and case-sensitive, as the
API is; a malformed grant grants nothing."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

GRANT_GROUP = "gateway.networking.k8s.io"
GRANT_VERSION = "v1beta1"
#: What a VocelioService reference is, in a grant's `from`.
FROM_GROUP = "gateway.vocelio.ai"
FROM_KIND = "VocelioService"
#: What it references, in a grant's `to`: a core Service.
TO_GROUP = ""
TO_KIND = "Service"


@dataclass(frozen=True)
class GrantFrom:
    group: str
    kind: str
    namespace: str


@dataclass(frozen=True)
class GrantTo:
    group: str
    kind: str
    name: str | None = None


@dataclass(frozen=True)
class ReferenceGrant:
    """One grant, in the namespace that owns the referenced objects."""

    namespace: str
    name: str
    sources: tuple[GrantFrom, ...]
    targets: tuple[GrantTo, ...]
    #: The object's uid: which object of this name the operator's index holds (not part of what it grants).
    uid: str = field(default="", compare=False)


def parse_grant(body: Mapping[str, Any]) -> ReferenceGrant:
    """A grant from its API body; entries that are not well-formed are dropped (they grant nothing)."""
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    sources = []
    for item in spec.get("from") or []:
        if not isinstance(item, Mapping):
            continue
        group, kind, namespace = item.get("group"), item.get("kind"), item.get("namespace")
        if isinstance(group, str) and isinstance(kind, str) and isinstance(namespace, str) and kind and namespace:
            sources.append(GrantFrom(group, kind, namespace))
    targets = []
    for item in spec.get("to") or []:
        if not isinstance(item, Mapping):
            continue
        group, kind, name = item.get("group"), item.get("kind"), item.get("name")
        if isinstance(group, str) and isinstance(kind, str) and kind and (name is None or isinstance(name, str)):
            # An empty name is an unset name in the API: every object of the kind.
            targets.append(GrantTo(group, kind, name or None))
    return ReferenceGrant(str(meta.get("namespace") or "default"), str(meta.get("name") or ""),
                          tuple(sources), tuple(targets), str(meta.get("uid") or ""))


def reference_permitted(from_namespace: str, to_namespace: str, to_name: str,
                        grants: Iterable[ReferenceGrant]) -> bool:
    """True when a VocelioService in `from_namespace` may use Service `to_namespace/to_name`:
    always within one namespace, else only when a grant in `to_namespace` allows it."""
    if from_namespace == to_namespace:
        return True
    for grant in grants:
        if grant.namespace != to_namespace:
            continue  # a grant speaks only for its own namespace
        if not any(s.group == FROM_GROUP and s.kind == FROM_KIND and s.namespace == from_namespace
                   for s in grant.sources):
            continue
        if any(t.group == TO_GROUP and t.kind == TO_KIND and (t.name is None or t.name == to_name)
               for t in grant.targets):
            return True
    return False
