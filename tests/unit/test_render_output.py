"""The renderer builds the config as plain data and serialises it without the
contract model (validation happens once, on the input resources). These tests hold it
to the model: every rendered config parses into `GatewayConfig` (every field's
constraints, the hash) and serialises back to the same bytes, for every golden case
and for generated resources at the edges of every range the CRD allows."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.harness.golden import cases, load_index, render
from vocelio_contract.config import GatewayConfig, parse_config
from vocelio_operator.model.resources import DiscoveredEndpoint, ResourceError, is_service, parse_resource
from vocelio_operator.translation.rendering import render_config


def assert_matches_the_model(text: str, digest: str) -> GatewayConfig:
    config = parse_config(text)  # validates every field and the hash
    assert config.hash == digest
    assert config.to_json() == text
    assert GatewayConfig(services=config.services, rate_tiers=config.rate_tiers).seal().to_json() == text
    return config


@pytest.mark.parametrize("case", cases())
def test_every_golden_render_is_a_valid_config_with_the_model_s_own_bytes_and_hash(case: str) -> None:
    result = render(load_index(case))
    config = assert_matches_the_model(result.text, result.hash)
    assert len(config.services) == result.services
    assert result.version == config.version


def floats(low: float, high: float) -> st.SearchStrategy[float]:
    return st.one_of(st.sampled_from([low, high]), st.floats(low, high, allow_nan=False))


SPECS = st.fixed_dictionaries({
    "pathPrefix": st.sampled_from(["/a", "/api/v1/x", "/a/b.c", "/%7Euser"]),
    "backends": st.lists(st.fixed_dictionaries({
        "weight": st.integers(1, 10_000),
        "serviceRef": st.fixed_dictionaries({"name": st.just("svc"), "port": st.sampled_from(["http", 8080, "8080"])}),
    }), min_size=1, max_size=2),
}, optional={
    "hostnames": st.lists(st.sampled_from(["a.example.com", "*.example.com", "x-1.y", "*.b.c"]), unique=True,
                          max_size=3),
    "aliases": st.just(["/alias"]),
    "rewrite": st.sampled_from(["/", "/v2"]),
    "routeClass": st.sampled_from(["webhooks", "é"]),
    "healthCheck": st.fixed_dictionaries({"intervalSeconds": floats(60.0, 3600.0), "timeoutSeconds": floats(0.01, 60),
                                          "expectedStatuses": st.lists(st.integers(100, 599), max_size=3)}),
    "passiveHealth": st.fixed_dictionaries({"baseEjectionSeconds": floats(0.1, 3600),
                                            "maxEjectionSeconds": floats(0.1, 86_400)}),
    "circuitBreaker": st.fixed_dictionaries({"probeTimeoutSeconds": floats(0.01, 3600),
                                             "windowSeconds": st.integers(1, 3600)}),
    "timeouts": st.fixed_dictionaries({"retryFloorSeconds": st.sampled_from([0, 0.00001, 1e-7, 60]),
                                       "perTrySeconds": floats(0.01, 3600), "connectSeconds": st.integers(1, 300)}),
    "retry": st.fixed_dictionaries({"methods": st.lists(st.sampled_from(["get", "POST", "put"]), max_size=3),
                                    "minRetriesPerSecond": st.sampled_from([0, 1e-5, 10_000])}),
    "auth": st.fixed_dictionaries({"mode": st.sampled_from(["public", "jwt"]),
                                   "roles": st.lists(st.sampled_from(["r", "ü"]), max_size=2)}),
    "rateLimit": st.fixed_dictionaries({"requests": st.integers(1, 10**12), "windowSeconds": st.integers(1, 86_400)}),
    "maxBodyBytes": st.integers(0, 10**12),
    "upgrades": st.lists(st.sampled_from(["WebSocket", " websocket", "foo/1.0"]), max_size=3),
})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(SPECS, min_size=1, max_size=3), st.integers(1, 65535), st.booleans())
def test_generated_resources_render_to_a_config_the_model_accepts_byte_for_byte(
        specs: list[dict[str, Any]], port: int, ready: bool) -> None:
    resources = []
    for i, spec in enumerate(specs):
        try:
            res = parse_resource({"apiVersion": "gateway.vocelio.ai/v1alpha1", "kind": "VocelioService",
                                  "metadata": {"name": f"s{i}", "namespace": "ns"}, "spec": spec})
        except ResourceError:
            continue  # refused at the boundary (a cross-field rule): never rendered
        assert is_service(res)
        resources.append(res)
    endpoints = {("ns", "svc"): [DiscoveredEndpoint(f"198.18.0.{j}", ready, None if j % 2 else f"p{j}",
                                                    {"http": port}) for j in range(3)]}
    result = render_config(resources, [], endpoints)
    assert_matches_the_model(result.text, result.hash)
