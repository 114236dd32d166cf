"""Golden translation cases (tests/golden/<case>/): resources in, the config, each
resource's status, the API-key document and the ConfigMaps out, compared byte for
byte with the files checked in beside the input. `pytest --update-golden` (or
VOCELIO_UPDATE_GOLDEN=1) rewrites them; review the diff like code."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.harness.golden import GOLDEN, cases, load_index, render, translate
from vocelio_contract.sharding import join_sharded, shard_config

EXPECTED = {"config.json", "status.yaml", "api-keys.json", "configmaps.json"}


def test_there_are_at_least_ten_cases_and_each_has_its_expected_files() -> None:
    found = cases()
    assert len(found) >= 10, found
    for case in found:
        assert {"config.json", "status.yaml"} <= {p.name for p in (GOLDEN / case).iterdir()}, case


@pytest.mark.parametrize("case", cases())
def test_a_case_translates_to_its_golden_files(case: str, update_golden: bool) -> None:
    _, files = translate(case)
    folder = GOLDEN / case
    if update_golden:
        for stale in EXPECTED - set(files):
            (folder / stale).unlink(missing_ok=True)
        for name, text in files.items():
            (folder / name).write_text(text)
    for name, text in files.items():
        path = folder / name
        assert path.exists(), f"{path} missing: run pytest --update-golden"
        assert text == path.read_text(), f"{case}/{name} changed; review, then regenerate with --update-golden"
    # No expected file is left over from an output the case no longer produces.
    assert {p.name for p in folder.iterdir()} & EXPECTED == set(files)


@pytest.mark.parametrize("case", cases())
def test_a_case_renders_the_same_whatever_the_event_order(case: str) -> None:
    index = load_index(case)
    forward = render(index)
    for table in (index.services, index.tiers, index.slices):
        items = list(table.items())
        table.clear()
        table.update(reversed(items))  # type: ignore[arg-type]
    assert render(index).config.to_json() == forward.config.to_json()


def test_every_status_carries_the_render_time_and_the_resource_generation() -> None:
    for case in cases():
        statuses = yaml.safe_load((GOLDEN / case / "status.yaml").read_text())
        for key, status in statuses.items():
            assert status["conditions"], key
            for condition in status["conditions"]:
                assert condition["observedGeneration"] == status["observedGeneration"], (case, key)


def test_the_sharded_case_joins_back_to_its_golden_config() -> None:
    result, files = translate("sharding")
    shards = shard_config(result.config.to_json(), result.config.hash, "cfg", 16384)
    assert len(shards) > 2
    joined = join_sharded(shards["cfg"]["manifest.json"], lambda i: shards[f"cfg-part-{i}"]["part"])
    assert json.loads(files["config.json"]) == json.loads(joined.to_json())


# The cases' meaning, stated once more in the test body (the golden files could drift
# together with a wrong renderer; these cannot).

def reasons(case: str) -> dict[str, tuple[str, ...]]:
    statuses = yaml.safe_load((GOLDEN / case / "status.yaml").read_text())
    return {key: tuple(f"{c['type']}={c['status']}/{c['reason']}" for c in status["conditions"])
            for key, status in statuses.items()}


def config(case: str) -> dict[str, object]:
    loaded: dict[str, object] = json.loads((GOLDEN / case / "config.json").read_text())
    return loaded


def services(case: str) -> dict[str, dict[str, object]]:
    listed: list[dict[str, object]] = config(case)["services"]  # type: ignore[assignment]
    return {str(s["name"]): s for s in listed}


def test_a_canary_keeps_both_backend_weights_and_counts_every_endpoint() -> None:
    checkout = services("canary-weights")["checkout"]
    backends = checkout["backends"]
    assert [(b["name"], b["weight"]) for b in backends] == [("stable", 90), ("canary", 10)]  # type: ignore[attr-defined]
    status = yaml.safe_load((GOLDEN / "canary-weights" / "status.yaml").read_text())
    assert status["VocelioService/shop/checkout"]["endpoints"] == "3/5"


def test_an_alias_held_by_an_older_service_rejects_the_newcomer_whole() -> None:
    got = reasons("aliases")
    assert "Accepted=True/Accepted" in got["VocelioService/voice/calls"]
    assert "Accepted=False/PrefixConflict" in got["VocelioService/voice/recordings"]
    assert "Accepted=False/PrefixConflict" in got["VocelioService/voice/transcripts"]
    assert set(services("aliases")) == {"calls", "voicemail"}


def test_unresolved_references_keep_the_service_with_no_endpoints() -> None:
    got = reasons("missing-references")
    for name in ("orphan", "wrong-port-name", "wrong-port-number"):
        assert "ResolvedRefs=False/BackendNotFound" in got[f"VocelioService/crm/{name}"], name
    assert "ResolvedRefs=True/ResolvedRefs" in got["VocelioService/sales/shared-contacts"]


def test_invalid_resources_are_refused_and_the_valid_one_stays() -> None:
    got = reasons("invalid-resources")
    assert set(services("invalid-resources")) == {"good"}
    invalid = [k for k, v in got.items() if "Accepted=False/Invalid" in v]
    assert len(invalid) == 7, got
    assert config("invalid-resources")["rate_tiers"] == []


def test_every_spelling_of_a_reserved_path_is_refused() -> None:
    got = reasons("reserved-paths")
    for name in ("health-shadow", "metrics-slash", "readyz-upper", "docs-escaped", "root"):
        assert "Accepted=False/ReservedPath" in got[f"VocelioService/default/{name}"], name
    assert set(services("reserved-paths")) == {"statuspage"}


def test_tiers_are_ordered_by_priority_then_name() -> None:
    tiers: list[dict[str, object]] = config("tiers-and-priorities")["rate_tiers"]  # type: ignore[assignment]
    assert [t["name"] for t in tiers] == ["webhooks", "enterprise", "premium", "api-key", "authenticated",
                                          "anonymous"]


def test_a_service_declaring_h2c_is_spoken_to_over_h2c_and_the_others_stay_http1() -> None:
    got = reasons("grpc-upstream")
    assert "Accepted=False/Invalid" in got["VocelioService/voice/synthesis"]
    rendered = services("grpc-upstream")
    assert set(rendered) == {"transcription", "recordings"}
    assert rendered["transcription"]["upstream_protocol"] == "h2c"
    assert rendered["recordings"]["upstream_protocol"] == "http/1.1"


def test_one_prefix_on_an_exact_host_a_wildcard_and_no_host_is_three_routes_picked_by_host() -> None:
    from vocelio_contract.config import parse_config
    from vocelio_contract.hosts import request_host
    from vocelio_proxy.policy.routing import Router

    got = reasons("host-precedence")
    for name in ("storefront", "tenant-sites", "catalog", "shop-health"):
        assert "Accepted=True/Accepted" in got[f"VocelioService/shop/{name}"], name
    assert "Accepted=False/ReservedPath" in got["VocelioService/shop/hostless-root"]
    router = Router.build(parse_config((GOLDEN / "host-precedence" / "config.json").read_text()).services)

    def served_by(host: str, path: str) -> str | None:
        match = router.match(path, request_host(host))
        return None if match is None else match.service.name

    assert served_by("shop.example.com", "/api/v1/catalog/1") == "storefront"
    assert served_by("eu.example.com", "/api/v1/catalog/1") == "tenant-sites"
    assert served_by("example.com", "/api/v1/catalog/1") == "catalog"
    assert served_by("status.example.com", "/health") == "shop-health"
    assert served_by("status.example.com", "/api/v1/catalog") == "tenant-sites"


def test_wildcards_at_two_depths_and_an_exact_name_are_separate_hosts_and_bad_names_are_refused() -> None:
    got = reasons("wildcard-hosts")
    assert set(services("wildcard-hosts")) == {"regions", "paris"}
    for name in ("upper", "with-port", "ip-literal", "inner-wildcard", "repeated"):
        assert "Accepted=False/Invalid" in got[f"VocelioService/edge/{name}"], name
    assert services("wildcard-hosts")["regions"]["hosts"] == ["*.eu.example.com", "*.example.com", "eu.example.com"]


def test_conflicts_are_per_host_and_prefix_and_the_older_keeps_it() -> None:
    got = reasons("host-conflicts")
    assert set(services("host-conflicts")) == {"billing", "billing-eu", "billing-any-host"}
    assert "Accepted=False/PrefixConflict" in got["VocelioService/tenant-b/billing-copy"]
    assert "Accepted=False/PrefixConflict" in got["VocelioService/tenant-c/wildcard-late"]
    assert "hosts" not in services("host-conflicts")["billing-any-host"]
