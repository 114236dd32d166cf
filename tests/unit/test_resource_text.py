"""Resource text the config cannot carry: a manifest string that is not valid
Unicode (a lone surrogate, written as a `\\ud800` escape in YAML or JSON; the
API server never sends one, a standalone file can) is refused at the boundary
with the field it is in, so the renderer, which serialises without validating
again, never meets it and one such resource cannot stop every route."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from vocelio_operator.local.files import render_folder
from vocelio_operator.model.resources import API_VERSION, ResourceError, parse_resource


def _service(name: str, prefix: str, **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"pathPrefix": prefix,
                            "backends": [{"staticEndpoints": [{"address": "127.0.0.1", "port": 8080}]}]}
    spec.update(extra)
    return {"apiVersion": API_VERSION, "kind": "VocelioService", "metadata": {"name": name}, "spec": spec}


@pytest.mark.parametrize(("where", "expected_path"), [
    ({"routeClass": "x\ud800"}, "spec.routeClass"),
    ({"auth": {"mode": "jwt", "roles": ["ok", "\udfff"]}}, "spec.auth.roles.1"),
    ({"retry": {"methods": ["GET", "P\ud83dST"]}}, "spec.retry.methods.1"),
    ({"backends": [{"name": "b\ud800", "staticEndpoints": [{"address": "127.0.0.1", "port": 80}]}]},
     "spec.backends.0.name"),
])
def test_a_string_that_is_not_valid_unicode_is_refused_with_its_field(where: dict[str, Any],
                                                                     expected_path: str) -> None:
    with pytest.raises(ResourceError) as caught:
        parse_resource(_service("bad", "/bad", **where))
    (problem,) = caught.value.problems
    assert problem.path == expected_path
    # The message never repeats the text (a log line or status with a lone surrogate cannot be encoded).
    str(problem).encode("utf-8")


def test_a_lone_surrogate_in_metadata_is_refused_too() -> None:
    doc = _service("ok", "/ok")
    doc["metadata"]["namespace"] = "team-\ud800"
    with pytest.raises(ResourceError) as caught:
        parse_resource(doc)
    assert caught.value.problems[0].path == "metadata.namespace"


def test_one_resource_with_a_lone_surrogate_does_not_stop_the_render_of_the_others(tmp_path: Path) -> None:
    head = f"apiVersion: {API_VERSION}\nkind: VocelioService\n"
    backends = "  backends: [{staticEndpoints: [{address: 127.0.0.1, port: 8080}]}]\n"
    good = head + "metadata: {name: good}\nspec:\n  pathPrefix: /good\n" + backends
    bad = head + 'metadata: {name: bad}\nspec:\n  pathPrefix: /bad\n  routeClass: "x\\ud800"\n' + backends
    (tmp_path / "a.yaml").write_text(good + "---\n" + bad, encoding="utf-8")
    result, loaded = render_folder(tmp_path)
    assert [s.name for s in result.config.services] == ["good"]
    assert any("spec.routeClass" in line for line in loaded.problems), loaded.problems
