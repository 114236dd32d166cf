"""The golden-test translation, Envoy Gateway style: one folder per case under
tests/golden/ with `input.yaml` (VocelioServices, RateTiers, EndpointSlices and
API-key Secrets, as the API server would hand them to the operator) and the
expected outputs beside it: `config.json` (the rendered GatewayConfig), `status.yaml`
(each resource's status subresource), `api-keys.json` when the case has key Secrets,
and `configmaps.json` when `options.yaml` sets `shardBytes`. The inputs go through
the operator's own pure path: the cluster index, the renderer, the status builder and
the sharding contract. Regenerate with `pytest --update-golden` (or
VOCELIO_UPDATE_GOLDEN=1) after a deliberate change, and review the diff."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from vocelio_contract.sharding import shard_config
from vocelio_operator.translation.cluster_index import ClusterIndex
from vocelio_operator.translation.rendering import RenderResult, render_config
from vocelio_operator.translation.status import resource_status

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
#: Every condition's lastTransitionTime in the expected statuses (a first render).
NOW = "2026-01-01T00:00:00Z"


def cases() -> list[str]:
    return sorted(p.name for p in GOLDEN.iterdir() if (p / "input.yaml").is_file())


def load_index(case: str) -> ClusterIndex:
    """The cluster index after the case's objects arrived as watch events, in file order."""
    index = ClusterIndex()
    for doc in yaml.safe_load_all((GOLDEN / case / "input.yaml").read_text()):
        if not doc:
            continue
        kind = doc.get("kind")
        if kind == "EndpointSlice":
            index.upsert_slice(doc)
        elif kind == "Secret":
            index.upsert_api_key_secret(doc)
        else:
            index.upsert_resource(doc)
    return index


def render(index: ClusterIndex) -> RenderResult:
    return render_config(list(index.services.values()), list(index.tiers.values()), index.endpoint_index())


def translate(case: str) -> tuple[RenderResult, dict[str, str]]:
    """The render of a case and its expected files, by name."""
    index = load_index(case)
    result = render(index)
    statuses: dict[str, Any] = {}
    for key, ref in sorted(index.refs.items()):
        statuses[key] = resource_status(ref.kind, ref.namespace, ref.name, ref.generation, result.outcomes.get(key),
                                        index.invalid.get(key), [], NOW)
    files = {
        "config.json": json.dumps(json.loads(result.config.to_json()), indent=1, sort_keys=True) + "\n",
        "status.yaml": yaml.safe_dump(statuses, sort_keys=True, width=100, allow_unicode=True),
    }
    if index.api_keys or index.api_key_problems:
        keys, _ = index.api_keys_document()
        files["api-keys.json"] = json.dumps({"keys": json.loads(keys), "problems": index.api_key_problems},
                                            indent=1, sort_keys=True) + "\n"
    options_path = GOLDEN / case / "options.yaml"
    options = yaml.safe_load(options_path.read_text()) if options_path.exists() else {}
    if "shardBytes" in options:
        text = result.config.to_json()
        shards = shard_config(text, result.config.hash, "vocelio-gateway-config", int(options["shardBytes"]))
        summary = {name: {key: (value if key == "manifest.json" else f"{len(value.encode())} bytes")
                          for key, value in data.items()} for name, data in shards.items()}
        files["configmaps.json"] = json.dumps(summary, indent=1, sort_keys=True) + "\n"
    return result, files
