"""The operator's cluster index (`translation.cluster_index`): watch bodies in,
renderer input out. EndpointSlices merge per Service, API-key Secrets become records
(or a reported problem), status-only updates are told apart from spec changes."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from vocelio_operator.translation.cluster_index import ClusterIndex, slice_endpoints


def vs(name: str, generation: int = 1, uid: str = "u1", prefix: str = "/api/v1/x") -> dict[str, Any]:
    return {"apiVersion": "gateway.vocelio.ai/v1alpha1", "kind": "VocelioService",
            "metadata": {"name": name, "namespace": "shop", "generation": generation, "uid": uid},
            "spec": {"pathPrefix": prefix, "backends": [{"serviceRef": {"name": "web", "port": 80}}]}}


def endpoint_slice(name: str, service: str | None, addresses: list[str], address_type: str = "IPv4",
                   ready: bool | None = True) -> dict[str, Any]:
    labels = {"kubernetes.io/service-name": service} if service else {}
    conditions = {} if ready is None else {"ready": ready}
    return {"metadata": {"name": name, "namespace": "shop", "labels": labels}, "addressType": address_type,
            "ports": [{"name": "http", "port": 8080}],
            "endpoints": [{"addresses": [a], "conditions": conditions} for a in addresses]}


def secret(key_id: str, **data: str) -> dict[str, Any]:
    fields = {"id": key_id, "hash": hashlib.sha256(key_id.encode()).hexdigest(), **data}
    return {"metadata": {"name": f"key-{key_id}", "namespace": "vocelio-system"},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in fields.items()}}


def test_slices_of_one_service_merge_in_name_order_and_leave_when_the_last_goes() -> None:
    index = ClusterIndex()
    assert index.upsert_slice(endpoint_slice("web-b", "web", ["198.18.0.2"])) == ("shop", "web")
    index.upsert_slice(endpoint_slice("web-a", "web", ["198.18.0.1"]))
    assert [e.address for e in index.endpoint_index()[("shop", "web")]] == ["198.18.0.1", "198.18.0.2"]
    index.remove_slice(endpoint_slice("web-a", "web", []))
    assert [e.address for e in index.endpoint_index()[("shop", "web")]] == ["198.18.0.2"]
    index.remove_slice(endpoint_slice("web-b", "web", []))
    assert index.endpoint_index() == {}
    assert index.endpoints_tracked() == 0


def test_a_slice_without_a_service_label_is_ignored() -> None:
    index = ClusterIndex()
    assert index.upsert_slice(endpoint_slice("loose", None, ["198.18.0.9"])) is None
    assert index.endpoint_index() == {}


def test_fqdn_slices_give_no_endpoints_and_unknown_readiness_counts_as_ready() -> None:
    assert slice_endpoints(endpoint_slice("f", "web", ["a.example"], address_type="FQDN")) == []
    [unknown] = slice_endpoints(endpoint_slice("u", "web", ["198.18.0.3"], ready=None))
    assert unknown.ready
    [terminating] = slice_endpoints({**endpoint_slice("t", "web", []), "endpoints": [
        {"addresses": ["198.18.0.4"], "conditions": {"ready": True, "terminating": True}}]})
    assert not terminating.ready


def test_a_status_echo_is_not_a_spec_change_but_a_new_generation_or_uid_is() -> None:
    index = ClusterIndex()
    body = vs("checkout", generation=2)
    assert index.spec_changed(body)
    index.upsert_resource(body)
    assert not index.spec_changed({**body, "status": {"conditions": []}})
    assert index.spec_changed(vs("checkout", generation=3))
    assert index.spec_changed(vs("checkout", generation=2, uid="recreated"))


def test_an_invalid_resource_is_remembered_with_its_problem_and_a_fix_clears_it() -> None:
    index = ClusterIndex()
    key = index.upsert_resource(vs("checkout", prefix="no-slash"))
    assert key == "VocelioService/shop/checkout"
    assert "pathPrefix" in index.invalid[key]
    assert key not in index.services
    index.upsert_resource(vs("checkout", generation=2))
    assert key not in index.invalid
    assert key in index.services
    index.remove_resource("VocelioService", "shop", "checkout")
    assert (index.services, index.refs, index.invalid) == ({}, {}, {})


def test_referenced_services_default_to_the_resource_namespace() -> None:
    index = ClusterIndex()
    index.upsert_resource(vs("checkout"))
    assert index.referenced_services() == {("shop", "web")}


def test_api_key_secrets_become_a_sorted_document_and_a_broken_one_a_problem() -> None:
    index = ClusterIndex()
    index.upsert_api_key_secret(secret("bbbbbbbbbbbb", name="second"))
    index.upsert_api_key_secret(secret("aaaaaaaaaaaa", name="first", roles="read,write"))
    broken = secret("cccccccccccc")
    del broken["data"]["hash"]
    index.upsert_api_key_secret(broken)
    text, digest = index.api_keys_document()
    assert text.index("aaaaaaaaaaaa") < text.index("bbbbbbbbbbbb")
    assert "cccccccccccc" not in text
    assert list(index.api_key_problems) == ["vocelio-system/key-cccccccccccc"]
    assert digest == hashlib.sha256(text.encode()).hexdigest()
    # The document never carries a presented key, only hashes.
    assert "voc_" not in text
    index.remove_api_key_secret("vocelio-system", "key-aaaaaaaaaaaa")
    assert "aaaaaaaaaaaa" not in index.api_keys_document()[0]
