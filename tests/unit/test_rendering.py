"""The renderer: resources in, config and per-resource outcomes out. The example
resources are compared with tests/golden/examples.json (`pytest --update-golden` or
VOCELIO_UPDATE_GOLDEN=1 rewrites it after a deliberate change; review the diff); the
per-case goldens are tests/unit/test_golden.py's."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from tests.harness.golden import translate
from vocelio_operator.local.files import load_folder
from vocelio_operator.model.resources import DiscoveredEndpoint, parse_resource
from vocelio_operator.translation.rendering import RenderResult, render_config

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden"

DISCOVERED = {
    ("payments", "billing"): [
        DiscoveredEndpoint("198.18.0.6", True, "billing-1", {"http": 8080}),
        DiscoveredEndpoint("198.18.0.2", True, "billing-0", {"http": 8080}),
        DiscoveredEndpoint("198.18.0.10", False, "billing-2", {"http": 8080}),
    ],
    ("payments", "billing-canary"): [DiscoveredEndpoint("198.18.0.14", True, "canary-0", {"": 8080})],
}


def snapshot(result: RenderResult) -> str:
    body = {"config": json.loads(result.config.to_json()),
            "outcomes": {k: asdict(v) for k, v in result.outcomes.items()}}
    return json.dumps(body, indent=1, sort_keys=True) + "\n"


def check_golden(name: str, text: str, update: bool) -> None:
    path = GOLDEN / name
    if update:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"{path} missing: run with VOCELIO_UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"{name} changed; review and regenerate with VOCELIO_UPDATE_GOLDEN=1"


def test_the_examples_render_to_the_golden_config(update_golden: bool) -> None:
    loaded = load_folder(ROOT / "examples" / "resources")
    assert loaded.problems == []
    check_golden("examples.json", snapshot(render_config(loaded.services, loaded.tiers, {})), update_golden)


def test_conflicts_reserved_paths_and_unresolved_refs_have_their_outcomes() -> None:
    result, _ = translate("conflicts")  # its files are compared by test_golden
    outcomes = result.outcomes
    assert outcomes["VocelioService/payments/billing-v2"].accepted_reason == "PrefixConflict"
    assert outcomes["VocelioService/default/sneaky"].accepted_reason == "ReservedPath"
    assert outcomes["VocelioService/tenant-b/billing-respelt"].accepted_reason == "PrefixConflict"
    assert outcomes["VocelioService/default/sneaky-escaped"].accepted_reason == "ReservedPath"
    assert outcomes["VocelioService/default/unreachable"].accepted_reason == "InvalidPrefix"
    assert not outcomes["VocelioService/default/orphan"].resolved
    billing = outcomes["VocelioService/payments/billing"]
    assert (billing.ready_endpoints, billing.total_endpoints) == (3, 4)
    assert [s.name for s in result.config.services] == ["orphan", "billing"]


def test_rendering_is_deterministic_whatever_the_input_order() -> None:
    loaded = load_folder(ROOT / "examples" / "resources")
    a = render_config(loaded.services, loaded.tiers, DISCOVERED)
    b = render_config(list(reversed(loaded.services)), list(reversed(loaded.tiers)),
                      {k: list(reversed(v)) for k, v in reversed(list(DISCOVERED.items()))})
    assert a.config.to_json() == b.config.to_json()
    assert a.config.hash == b.config.hash


def test_every_field_problem_names_its_field() -> None:
    doc = {"apiVersion": "gateway.vocelio.ai/v1alpha1", "kind": "VocelioService",
           "metadata": {"name": "x"}, "spec": {"pathPrefix": "nope", "backends": [{"weight": 0}]}}
    with pytest.raises(ValueError, match=r"spec\.pathPrefix") as info:
        parse_resource(doc)
    message = str(info.value)
    assert "spec.pathPrefix" in message
    assert "spec.backends.0" in message
    assert "exactly one of serviceRef or staticEndpoints" in message


def test_invalid_documents_are_reported_and_the_rest_still_load(tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text((ROOT / "examples" / "resources" / "rate-tiers.yaml").read_text())
    (tmp_path / "bad.yaml").write_text(
        "apiVersion: gateway.vocelio.ai/v1alpha1\nkind: RateTier\nmetadata: {name: broken}\n"
        "spec: {requests: 0, windowSeconds: 60, keyBy: ip, match: {anonymous: true, apiKey: true}}\n")
    loaded = load_folder(tmp_path)
    assert len(loaded.tiers) == 5
    assert len(loaded.problems) == 1
    problem = loaded.problems[0]
    assert "bad.yaml" in problem
    assert "RateTier/broken" in problem
    assert "spec.requests" in problem
    assert "exactly one of" in problem
