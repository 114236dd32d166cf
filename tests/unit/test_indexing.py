"""The operator's kopf indexes (`translation.indexing`): what one object contributes,
and the render input rebuilt from the indexes, equal to feeding the same objects to
the cluster index one by one."""

from __future__ import annotations

from typing import Any

import yaml

from tests.harness.golden import GOLDEN, cases, load_index, render
from vocelio_operator.translation.cluster_index import ClusterIndex
from vocelio_operator.translation.indexing import (
    GRANTS,
    RESOURCE_KINDS,
    SLICES,
    IndexedKey,
    IndexedResource,
    IndexedSlice,
    ServiceKey,
    grant_entry,
    indexed_uids,
    refresh,
    resource_entry,
    secret_entry,
    slice_entry,
)

Indexes = tuple[dict[str, list[IndexedResource]], dict[ServiceKey, list[IndexedSlice]], dict[str, list[IndexedKey]]]


def indexes(case: str) -> Indexes:
    """What kopf's indexes hold after listing the case's objects."""
    resources: dict[str, list[IndexedResource]] = {}
    slices: dict[ServiceKey, list[IndexedSlice]] = {}
    keys: dict[str, list[IndexedKey]] = {}
    for doc in yaml.safe_load_all((GOLDEN / case / "input.yaml").read_text()):
        if not doc:
            continue
        if doc.get("kind") == "Secret":
            for name, indexed_key in secret_entry(doc).items():
                keys.setdefault(name, []).append(indexed_key)
        elif doc.get("kind") == "EndpointSlice":
            for service, entry in (slice_entry(doc) or {}).items():
                slices.setdefault(service, []).append(entry)
        else:
            for key, resource in resource_entry(doc).items():
                resources.setdefault(key, []).append(resource)
    return resources, slices, keys


def test_every_golden_case_renders_the_same_from_the_indexes_as_from_events() -> None:
    for case in cases():
        resources, slices, keys = indexes(case)
        index = ClusterIndex()
        refresh(index, resources, slices, keys)
        events = load_index(case)
        expected = render(events)
        assert render(index).config.to_json() == expected.config.to_json(), case
        assert render(index).outcomes == expected.outcomes, case
        assert index.api_keys_document() == events.api_keys_document(), case
        assert index.api_key_problems == events.api_key_problems, case


def test_an_invalid_resource_is_indexed_with_its_problem() -> None:
    body: dict[str, Any] = {"apiVersion": "gateway.vocelio.ai/v1alpha1", "kind": "VocelioService",
                            "metadata": {"name": "x", "namespace": "shop", "generation": 4},
                            "spec": {"pathPrefix": "no-slash", "backends": []}}
    [(key, entry)] = resource_entry(body).items()
    assert key == "VocelioService/shop/x"
    assert entry.resource is None
    assert entry.problem is not None
    assert "pathPrefix" in entry.problem
    assert entry.ref.generation == 4


def test_grants_are_indexed_by_namespace_and_name_and_replace_the_index_grants() -> None:
    body = {"apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "ReferenceGrant",
            "metadata": {"name": "let-shop-in", "namespace": "payments"},
            "spec": {"from": [{"group": "gateway.vocelio.ai", "kind": "VocelioService", "namespace": "shop"}],
                     "to": [{"group": "", "kind": "Service"}]}}
    entry = grant_entry(body)
    assert list(entry) == ["payments/let-shop-in"]
    index = ClusterIndex()
    index.upsert_grant({**body, "metadata": {"name": "stale", "namespace": "payments"}})
    refresh(index, {}, {}, grants={key: [grant] for key, grant in entry.items()})
    assert list(index.grants) == ["payments/let-shop-in"]
    assert index.grants_by_namespace()["payments"][0].name == "let-shop-in"


def test_a_slice_of_no_service_is_not_indexed() -> None:
    assert slice_entry({"metadata": {"name": "loose", "namespace": "shop"}, "addressType": "IPv4"}) is None


def test_refresh_replaces_what_left_the_indexes_and_keeps_the_api_keys() -> None:
    resources, slices, _ = indexes("canary-weights")
    index = ClusterIndex()
    index.api_keys["vocelio-system/k"] = None  # type: ignore[assignment]  # a record the secret watch put
    refresh(index, resources, slices)
    assert set(index.services) == {"VocelioService/shop/checkout"}
    assert set(index.slices) == {("shop", "checkout"), ("shop", "checkout-canary")}
    refresh(index, {}, {("shop", "checkout"): []})
    assert (index.services, index.refs, index.slices) == ({}, {}, {})
    assert "vocelio-system/k" in index.api_keys


def test_the_indexes_name_what_they_hold_by_kind_namespace_and_uid() -> None:
    service = {"apiVersion": "gateway.vocelio.ai/v1alpha1", "kind": "VocelioService",
               "metadata": {"name": "checkout", "namespace": "shop", "uid": "u-svc"},
               "spec": {"pathPrefix": "/checkout", "backends": [{"serviceRef": {"name": "checkout", "port": 80}}]}}
    tier = {"apiVersion": "gateway.vocelio.ai/v1alpha1", "kind": "RateTier",
            "metadata": {"name": "gold", "namespace": "shop", "uid": "u-tier"}, "spec": {"requestsPerMinute": 10}}
    piece = {"metadata": {"name": "checkout-1", "namespace": "shop", "uid": "u-slice",
                          "labels": {"kubernetes.io/service-name": "checkout"}},
             "addressType": "IPv4", "endpoints": []}
    grant = {"metadata": {"name": "let-shop-in", "namespace": "payments", "uid": "u-grant"},
             "spec": {"from": [], "to": []}}
    no_uid = {**service, "metadata": {"name": "old", "namespace": "shop"}}
    resources: dict[str, list[IndexedResource]] = {}
    for body in (service, tier, no_uid):
        for key, entry in resource_entry(body).items():
            resources.setdefault(key, []).append(entry)
    slices = {key: [entry] for key, entry in (slice_entry(piece) or {}).items()}
    grants = {key: [value] for key, value in grant_entry(grant).items()}
    assert indexed_uids(resources, slices, grants) == {
        RESOURCE_KINDS["VocelioService"]: {"shop": {"u-svc"}},
        RESOURCE_KINDS["RateTier"]: {"shop": {"u-tier"}},
        SLICES: {"shop": {"u-slice"}},
        GRANTS: {"payments": {"u-grant"}},
    }


def test_refresh_leaves_out_what_is_gone_and_keeps_a_recreated_object_of_the_same_name() -> None:
    def service(uid: str, prefix: str) -> dict[str, Any]:
        return {"apiVersion": "gateway.vocelio.ai/v1alpha1", "kind": "VocelioService",
                "metadata": {"name": "checkout", "namespace": "shop", "uid": uid},
                "spec": {"pathPrefix": prefix, "backends": [{"serviceRef": {"name": "checkout", "port": 80}}]}}

    # kopf keeps the deleted object (uid "old") beside the one created under its name while it did not watch.
    resources: dict[str, list[IndexedResource]] = {}
    for body in (service("new", "/new"), service("old", "/old")):
        for key, entry in resource_entry(body).items():
            resources.setdefault(key, []).append(entry)
    piece = {"metadata": {"name": "checkout-1", "namespace": "shop", "uid": "old-slice",
                          "labels": {"kubernetes.io/service-name": "checkout"}}, "addressType": "IPv4"}
    slices = {key: [entry] for key, entry in (slice_entry(piece) or {}).items()}
    grants = {key: [value] for key, value in grant_entry(
        {"metadata": {"name": "g", "namespace": "shop", "uid": "old-grant"}, "spec": {}}).items()}
    index = ClusterIndex()
    refresh(index, resources, slices, grants=grants, gone={"old", "old-slice", "old-grant"})
    assert [s.spec.path_prefix for s in index.services.values()] == ["/new"]
    assert index.refs["VocelioService/shop/checkout"].uid == "new"
    assert (index.slices, index.grants) == ({}, {})
