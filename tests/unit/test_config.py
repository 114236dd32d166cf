"""The GatewayConfig contract: validation, sealing, and the checked-in schema."""

from pathlib import Path

import pytest

from vocelio_contract.config import ConfigError, GatewayConfig, Service, json_schema, parse_config

ROOT = Path(__file__).resolve().parents[2]


def test_the_checked_in_json_schema_matches_the_models() -> None:
    checked_in = (ROOT / "schema" / "gateway-config.schema.json").read_text()
    assert checked_in == json_schema(), "run `make schema` and commit the result"


def test_a_sealed_config_round_trips_byte_identically() -> None:
    cfg = GatewayConfig(services=[Service(name="a", prefixes=["/a"])]).seal()
    again = parse_config(cfg.to_json())
    assert again == cfg
    assert again.to_json() == cfg.to_json()


def test_a_tampered_config_is_rejected() -> None:
    cfg = GatewayConfig(services=[Service(name="a", prefixes=["/a"])]).seal()
    with pytest.raises(ConfigError, match="hash does not match"):
        parse_config(cfg.to_json().replace('"/a"', '"/b"'))


def test_duplicate_prefixes_are_rejected() -> None:
    with pytest.raises(ConfigError, match="claimed by"):
        parse_config(GatewayConfig.model_construct(services=[
            Service(name="a", prefixes=["/x"]), Service(name="b", prefixes=["/x"])]).model_dump_json())


@pytest.mark.parametrize("raw", ["", "{", '{"schema_version": 2}', '{"services": [{"name": "A", "prefixes": ["/a"]}]}',
                                 '{"services": [{"name": "a", "prefixes": ["a"]}]}'])
def test_malformed_documents_raise_a_config_error(raw: str) -> None:
    with pytest.raises(ConfigError):
        parse_config(raw)
