"""Offline checks against the CRDs' own OpenAPI schemas (crds/*.yaml), so
`vocelio-gateway validate` and the standalone file provider reject what the API
server would: types, ranges, patterns, enums and unknown fields. CEL rules are
mirrored by the resource models with the same messages. Used by `files`."""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft7Validator

CRD_DIR = Path(__file__).resolve().parents[3] / "crds"  # operator/vocelio_operator/model/schemas.py


def _to_json_schema(node: Any) -> Any:
    if isinstance(node, list):
        return [_to_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _to_json_schema(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    if node.get("x-kubernetes-int-or-string"):
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if out.get("type") == "object" and "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False  # kubectl's strict field validation
    return out


@cache
def validators() -> dict[str, Draft7Validator]:
    """Kind -> validator; empty when the CRDs are not next to the package (an installed image)."""
    found: dict[str, Draft7Validator] = {}
    if not CRD_DIR.is_dir():
        return found
    for path in sorted(CRD_DIR.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        if crd.get("spec", {}).get("group") != "gateway.vocelio.ai":
            continue
        schema = copy.deepcopy(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
        schema["properties"]["metadata"] = {"type": "object"}
        schema["properties"].pop("status", None)
        found[crd["spec"]["names"]["kind"]] = Draft7Validator(_to_json_schema(schema))
    return found


def schema_problems(doc: dict[str, Any]) -> list[str]:
    validator = validators().get(str(doc.get("kind")))
    if validator is None:
        return []
    problems = []
    for error in sorted(validator.iter_errors(doc), key=lambda e: [str(p) for p in e.absolute_path]):
        where = ".".join(str(p) for p in error.absolute_path) or "(root)"
        problems.append(f"{where}: {error.message}")
    return problems
