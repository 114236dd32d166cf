"""Attack findings (helper "attack") on the route table as the operator renders it:
the renderer decides prefix conflicts on the raw prefix text while the proxy
routes on the canonical, case-folded prefix. Each test asserts the correct
behaviour; fixed by comparing prefixes by `paths.route_key` in the renderer, the
file provider and the router, and by judging prefixes with the path policy at
render time (tests/adversarial/test_route_keys.py has more variants)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from vocelio_contract.paths import PathError
from vocelio_operator.local.files import load_folder
from vocelio_operator.model.resources import is_service, parse_resource
from vocelio_operator.translation.rendering import RenderResult, render_config
from vocelio_proxy.policy.routing import Router

DOC = """apiVersion: gateway.vocelio.ai/v1alpha1
kind: VocelioService
metadata:
  name: {name}
  namespace: {namespace}
  creationTimestamp: "{created}"
spec:
  pathPrefix: {prefix}
  auth: {{mode: {mode}}}
  backends:
    - name: primary
      staticEndpoints:
        - address: 127.0.0.1
          port: 18001
"""


def render(folder: Path, newcomer_prefix: str) -> RenderResult:
    (folder / "admin.yaml").write_text(DOC.format(name="admin", namespace="team-a", created="2024-01-01T00:00:00Z",
                                                  prefix="/api/v1/x/admin", mode="jwt"))
    (folder / "sneaky.yaml").write_text(DOC.format(name="sneaky", namespace="team-b",
                                                   created="2025-01-01T00:00:00Z", prefix=newcomer_prefix,
                                                   mode="public"))
    loaded = load_folder(folder)
    assert loaded.problems == []
    return render_config(loaded.services, loaded.tiers, {})


def render_unchecked(newcomer_prefix: str) -> RenderResult:
    """The renderer alone, on resources the CRD schema did not check: an object stored
    before the CRD's pattern was tightened, or an image without the CRD files. The
    renderer must hold on its own."""
    docs = [DOC.format(name="admin", namespace="team-a", created="2024-01-01T00:00:00Z", prefix="/api/v1/x/admin",
                       mode="jwt"),
            DOC.format(name="sneaky", namespace="team-b", created="2025-01-01T00:00:00Z", prefix=newcomer_prefix,
                       mode="public")]
    services = [res for res in (parse_resource(yaml.safe_load(doc)) for doc in docs) if is_service(res)]
    return render_config(services, [], {})


# Found by the attack helper: the renderer compared raw prefixes (p.rstrip('/')), so a newer
# service whose prefix differed only by case or escapes was Accepted, and the proxy router
# then refused every request under the established route as ambiguous.
@pytest.mark.parametrize("newcomer", ["/api/v1/x/ADMIN", "/API/V1/X/Admin", "/api/v1/x/%61dmin"])
def test_a_newer_service_whose_prefix_differs_only_by_case_or_escapes_is_the_one_rejected(
        tmp_path: Path, newcomer: str) -> None:
    result = render(tmp_path, newcomer)
    assert result.outcomes["VocelioService/team-b/sneaky"].accepted_reason == "PrefixConflict"
    router = Router.build(result.config.services)
    try:
        match = router.resolve("/api/v1/x/admin/keys")
    except PathError as exc:  # the established route must keep serving
        raise AssertionError(f"the established route was switched off: {exc}") from exc
    assert match is not None
    assert match.service.name == "admin"


# Found by the attack helper: a prefix that canonicalises onto a gateway endpoint, or that the
# path policy refuses, was reported Accepted while no request could ever reach it. `;` is now
# also refused by the CRD's pattern (tests/adversarial/test_route_keys.py), so the renderer is
# checked on its own here.
@pytest.mark.parametrize("newcomer", ["/%73tatus", "/api/v1/y/admin%2e", "/api/v1/y/a;b"])
def test_a_prefix_no_request_can_reach_is_not_reported_accepted(newcomer: str) -> None:
    result = render_unchecked(newcomer)
    assert result.outcomes["VocelioService/team-b/sneaky"].accepted_reason != "Accepted"
