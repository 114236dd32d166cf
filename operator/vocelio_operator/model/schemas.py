"""Offline checks against the CRDs' own OpenAPI schemas, so `vocelio-gateway
validate` and the standalone file provider reject what the API server would:
types, ranges, patterns, enums and unknown fields. CEL rules are mirrored by the
resource models with the same messages. Used by `files` (through `manifests`)
and by `vocelio-gateway crds`.

The CRDs ship inside the package (`vocelio_operator/crds/`, package data: the
same bytes as the repository's `crds/`), so an installed wheel or image checks
exactly what a checkout does. A package without them is broken, and says so:
there is no fallback to weaker checks."""

from __future__ import annotations

import copy
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

import yaml
from jsonschema import Draft7Validator

GROUP = "gateway.vocelio.ai"
# The kinds this package's CRDs must define; a package missing one is refused, not half-checked.
REQUIRED_KINDS = frozenset({"VocelioService", "RateTier"})


class CrdsMissing(FileNotFoundError):
    """The package's CRD files are absent or incomplete (a broken install): an OSError, so every
    command reports it as one line like any other missing file."""


def crd_files() -> list[Traversable]:
    """The CRD manifests shipped in the package, sorted by name."""
    folder = resources.files("vocelio_operator").joinpath("crds")  # the package root, not this module's
    if not folder.is_dir():
        raise CrdsMissing("the CRDs are missing from the installed vocelio_operator package (vocelio_operator/crds/); "
                          "reinstall the package")
    return sorted((f for f in folder.iterdir() if f.name.endswith(".yaml")), key=lambda f: f.name)


def crd_manifests() -> str:
    """Every shipped CRD as one multi-document YAML stream (for `kubectl apply -f -`)."""
    return "".join(f"---\n{f.read_text(encoding='utf-8').rstrip()}\n" for f in crd_files())


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
    """Kind -> validator for every gateway kind; CrdsMissing when the package lacks one."""
    found: dict[str, Draft7Validator] = {}
    for path in crd_files():
        crd = yaml.safe_load(path.read_text(encoding="utf-8"))
        if crd.get("spec", {}).get("group") != GROUP:
            continue
        schema = copy.deepcopy(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
        schema["properties"]["metadata"] = {"type": "object"}
        schema["properties"].pop("status", None)
        found[crd["spec"]["names"]["kind"]] = Draft7Validator(_to_json_schema(schema))
    missing = REQUIRED_KINDS - found.keys()
    if missing:
        raise CrdsMissing(f"the installed vocelio_operator package has no CRD for {', '.join(sorted(missing))}; "
                          "reinstall the package")
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
