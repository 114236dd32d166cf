"""The gateway's own paths are one list (`vocelio_contract.reserved`): the proxy serves
exactly those, its settings accept exactly those on a listener, the chart's values schema
offers exactly those, and the renderer refuses a route on any of them."""

from __future__ import annotations

import json
from pathlib import Path

from vocelio_contract.paths import route_key
from vocelio_contract.reserved import RESERVED_PATHS
from vocelio_proxy.pipeline.endpoints import ENDPOINTS
from vocelio_proxy.settings import ALWAYS_PUBLIC, GATEWAY_ENDPOINTS

ROOT = Path(__file__).resolve().parents[2]


def test_the_proxy_serves_exactly_the_reserved_paths() -> None:
    assert set(ENDPOINTS) == set(RESERVED_PATHS)
    assert set(GATEWAY_ENDPOINTS) == set(RESERVED_PATHS)
    assert set(ALWAYS_PUBLIC) <= set(RESERVED_PATHS)


def test_the_chart_offers_exactly_the_reserved_paths_for_the_public_listener() -> None:
    schema = json.loads((ROOT / "charts/vocelio-gateway/values.schema.json").read_text())
    admin = schema["properties"]["proxy"]["properties"]["admin"]["properties"]
    assert set(admin["publicEndpoints"]["items"]["enum"]) == set(RESERVED_PATHS)


def test_no_two_reserved_paths_share_a_route_key() -> None:
    assert len({route_key(p) for p in RESERVED_PATHS}) == len(RESERVED_PATHS)
