"""ConfigMap sharding, both directions, against the one set of limits in
`vocelio_contract.sharding` that the operator, the proxy's sources and the chart share."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vocelio_contract.config import Backend, ConfigError, Endpoint, GatewayConfig, Service
from vocelio_contract.sharding import (
    MAX_PARTS,
    OBJECT_LIMIT_BYTES,
    PART_BYTES,
    ConfigTooLarge,
    join_sharded,
    shard_config,
)
from vocelio_operator.settings import OperatorSettings

ROOT = Path(__file__).resolve().parents[2]


def config_of(count: int, name_bytes: int = 0) -> GatewayConfig:
    services = [Service(name=f"svc-{i}", prefixes=[f"/api/v1/svc-{i}/{'x' * name_bytes}"],
                        backends=[Backend(name="b", endpoints=[Endpoint(address=f"198.18.{i // 250}.{i % 250}",
                                                                        port=80)])])
                for i in range(count)]
    return GatewayConfig(services=services).seal()


def join(shards: dict[str, dict[str, str]], name: str) -> GatewayConfig:
    return join_sharded(shards[name]["manifest.json"], lambda i: shards[f"{name}-part-{i}"]["part"])


def test_a_config_that_fits_is_one_configmap_with_gateway_json() -> None:
    config = config_of(3)
    shards = shard_config(config.to_json(), config.hash, "cfg")
    assert shards == {"cfg": {"gateway.json": config.to_json()}}


def test_a_large_config_splits_into_parts_that_join_back_to_the_same_config() -> None:
    config = config_of(400)
    shards = shard_config(config.to_json(), config.hash, "cfg", 64 * 1024)
    manifest = json.loads(shards["cfg"]["manifest.json"])
    assert manifest == {"hash": config.hash, "parts": len(shards) - 1}
    assert 1 < manifest["parts"] <= MAX_PARTS
    assert all(len(data["part"].encode()) <= 64 * 1024 for key, data in shards.items() if key != "cfg")
    assert join(shards, "cfg") == config


@given(st.text(min_size=1, max_size=3000), st.integers(min_value=1024, max_value=4096))
def test_parts_concatenate_to_the_exact_text_without_splitting_a_character(text: str, limit: int) -> None:
    try:
        shards = shard_config(text, "h", "cfg", limit)
    except ConfigTooLarge:
        assert len(text.encode()) > limit
        return
    if "gateway.json" in shards["cfg"]:
        assert shards["cfg"]["gateway.json"] == text
        return
    parts = [shards[f"cfg-part-{i}"]["part"] for i in range(len(shards) - 1)]
    assert "".join(parts) == text


def test_a_config_needing_more_parts_than_the_proxies_read_is_refused_not_written() -> None:
    config = config_of(400)
    with pytest.raises(ConfigTooLarge, match=f"at most {MAX_PARTS}"):
        shard_config(config.to_json(), config.hash, "cfg", 2048)


@pytest.mark.parametrize("parts", [0, -1, MAX_PARTS + 1, 10_000])
def test_a_manifest_naming_an_impossible_part_count_is_a_config_error(parts: int) -> None:
    asked: list[int] = []

    def read(i: int) -> str:
        asked.append(i)
        return ""

    with pytest.raises(ConfigError, match="incomplete sharded config"):
        join_sharded(json.dumps({"hash": "h", "parts": parts}), read)
    assert asked == []  # refused before reading a single part


def test_parts_of_two_versions_are_a_config_error() -> None:
    old, new = config_of(300), config_of(301)
    old_shards = shard_config(old.to_json(), old.hash, "cfg", 64 * 1024)
    new_shards = shard_config(new.to_json(), new.hash, "cfg", 64 * 1024)
    mixed = {**old_shards, "cfg": new_shards["cfg"]}
    with pytest.raises(ConfigError):
        join(mixed, "cfg")


def test_a_missing_part_is_a_config_error() -> None:
    config = config_of(400)
    shards = shard_config(config.to_json(), config.hash, "cfg", 64 * 1024)
    del shards["cfg-part-1"]

    def read(i: int) -> str:
        try:
            return shards[f"cfg-part-{i}"]["part"]
        except KeyError as exc:
            raise ValueError(f"part {i} missing") from exc

    with pytest.raises(ConfigError, match="part 1 missing"):
        join_sharded(shards["cfg"]["manifest.json"], read)


def test_the_chart_mounts_exactly_the_parts_the_contract_allows() -> None:
    template = (ROOT / "charts/vocelio-gateway/templates/proxy-deployment.yaml").read_text()
    mounted = re.findall(r"range \$i := until (\d+)", template)
    assert mounted == [str(MAX_PARTS)]


def test_the_operator_default_part_size_is_the_contracts_and_fits_an_object() -> None:
    assert OperatorSettings().shard_bytes == PART_BYTES
    assert PART_BYTES < OBJECT_LIMIT_BYTES
