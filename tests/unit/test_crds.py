"""The CRD schemas teach the API: every field has a description and uses only
structural-schema keywords (a stray comma in a flow mapping once turned half a
description into a bogus key)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
KEYWORDS = {"type", "description", "default", "enum", "minimum", "maximum", "pattern", "maxLength", "minLength",
            "items", "properties", "required", "x-kubernetes-int-or-string", "x-kubernetes-validations", "maxItems",
            "minItems", "format", "x-kubernetes-list-type", "x-kubernetes-list-map-keys",
            "x-kubernetes-preserve-unknown-fields", "additionalProperties"}


def walk(node: dict[str, Any], path: str, problems: list[str]) -> None:
    unknown = set(node) - KEYWORDS
    if unknown:
        problems.append(f"{path}: unknown keys {sorted(unknown)}")
    for name, child in (node.get("properties") or {}).items():
        if name not in ("metadata", "apiVersion", "kind") and "description" not in child:
            problems.append(f"{path}.{name}: no description")
        walk(child, f"{path}.{name}", problems)
    if isinstance(node.get("items"), dict):
        walk(node["items"], f"{path}[]", problems)


@pytest.mark.parametrize("name", ["vocelioservices.yaml", "ratetiers.yaml"])
def test_every_crd_field_is_described_with_known_keywords(name: str) -> None:
    crd = yaml.safe_load((ROOT / "crds" / name).read_text())
    problems: list[str] = []
    for version in crd["spec"]["versions"]:
        walk(version["schema"]["openAPIV3Schema"], version["name"], problems)
    assert problems == []
