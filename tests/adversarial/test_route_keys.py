"""A tenant cannot switch off or shadow another tenant's route by how it spells a
prefix, and no prefix is reported Accepted that no request can reach.

The renderer (`rendering.render_config`), the file provider (`files.FolderSource`)
and the proxy's router (`routing.Router`) compare prefixes by one key,
`paths.route_key` (canonical form, escapes decoded, letter case folded). The
properties, for every respelling and every proxy path policy:

* the config the renderer emits never contains two prefixes the router finds
  ambiguous or refuses, so no request under an accepted route is refused for a
  reason another tenant's resource created;
* the older resource keeps a contested key (PrefixConflict on the newcomer);
* a prefix the path policy refuses is `InvalidPrefix`, a prefix whose key is a
  gateway endpoint is `ReservedPath`, a prefix with dot segments in any spelling
  is `InvalidPrefix`;
* the CRD's pattern refuses obviously malformed prefixes at admission.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.harness.app_fixtures import GatewayFactory, poll
from tests.harness.hostile import RecordingUpstreamFactory
from tests.harness.reload_tools import write_atomic
from vocelio_contract.paths import PathError, PathPolicy, route_key
from vocelio_contract.reserved import RESERVED_PATHS
from vocelio_operator.local.files import FolderSource, load_folder
from vocelio_operator.local.standalone import prime
from vocelio_operator.model.resources import VocelioServiceResource, is_service, parse_resource
from vocelio_operator.translation.rendering import RenderResult, render_config
from vocelio_proxy.policy.routing import Router
from vocelio_proxy.settings import PathSettings, ProxySettings

API = "gateway.vocelio.ai/v1alpha1"
PROXY_POLICIES = [PathPolicy(), PathPolicy(case="insensitive"), PathPolicy(case="sensitive"),
                  PathPolicy(path_parameters="strip"), PathPolicy(format_suffix="allow")]


def manifest(name: str, prefix: str, *, namespace: str = "default", created: str | None = None,
             aliases: list[str] | None = None, mode: str = "public", port: int = 18001) -> str:
    meta = {"name": name, "namespace": namespace, **({"creationTimestamp": created} if created else {})}
    spec: dict[str, object] = {"pathPrefix": prefix, "auth": {"mode": mode}, "healthCheck": {"enabled": False},
                               "backends": [{"staticEndpoints": [{"address": "127.0.0.1", "port": port}]}]}
    if aliases:
        spec["aliases"] = aliases
    return yaml.safe_dump({"apiVersion": API, "kind": "VocelioService", "metadata": meta, "spec": spec})


def resource(name: str, prefix: str, **kw: object) -> VocelioServiceResource:
    """A resource through the model only (not the CRD schema): the renderer must hold alone."""
    res = parse_resource(yaml.safe_load(manifest(name, prefix, **kw)))  # type: ignore[arg-type]
    assert is_service(res)
    return res


def outcome(result: RenderResult, name: str, namespace: str = "default") -> tuple[str, str]:
    found = result.outcomes[f"VocelioService/{namespace}/{name}"]
    return found.accepted_reason, found.accepted_message


# -- respellings of an established prefix --------------------------------------------------

ESTABLISHED = "/api/v1/x/admin"
RESPELLINGS = [
    "/api/v1/x/ADMIN", "/API/V1/X/Admin", "/api/v1/x/%61dmin", "/api/v1/x/%41DMIN", "/api/v1/x/%61%64%6D%69%6E",
    "/api/v1/x/admin/", "/Api/v1/x/admin/", "/api/v1/%78/admin", "/api/v1/x/adm%49n",
]


@pytest.mark.parametrize("newcomer", RESPELLINGS)
def test_every_respelling_of_an_established_prefix_is_the_newcomers_conflict(newcomer: str) -> None:
    result = render_config([resource("admin", ESTABLISHED, namespace="team-a", created="2024-01-01T00:00:00Z",
                                      mode="jwt"),
                            resource("sneaky", newcomer, namespace="team-b", created="2025-01-01T00:00:00Z")], [], {})
    reason, message = outcome(result, "sneaky", "team-b")
    assert reason == "PrefixConflict"
    assert "team-a/admin" in message
    assert [s.name for s in result.config.services] == ["admin"]
    for policy in PROXY_POLICIES:
        match = Router.build(result.config.services, policy).resolve("/api/v1/x/admin/keys")
        assert match is not None
        assert match.service.name == "admin"


@pytest.mark.parametrize("newcomer", RESPELLINGS)
def test_a_respelling_as_an_alias_is_also_the_newcomers_conflict(newcomer: str) -> None:
    result = render_config([resource("admin", ESTABLISHED, created="2024-01-01T00:00:00Z"),
                            resource("sneaky", "/sneaky", aliases=[newcomer], created="2025-01-01T00:00:00Z")], [], {})
    assert outcome(result, "sneaky")[0] == "PrefixConflict"


@pytest.mark.parametrize(("established", "newcomer"), [
    ("/caf%C3%A9", "/CAF%C3%89"), ("/caf%C3%A9", "/caf%c3%a9"), ("/a+b", "/a%2Bb"), ("/x/~me", "/x/%7EME"),
    ("/%C3%A9t%C3%A9", "/e%CC%81t%C3%A9"),
])
def test_unicode_case_escapes_and_composed_forms_are_one_route(established: str, newcomer: str) -> None:
    result = render_config([resource("first", established, created="2024-01-01T00:00:00Z"),
                            resource("second", newcomer, created="2025-01-01T00:00:00Z")], [], {})
    assert outcome(result, "second")[0] == "PrefixConflict"
    for policy in PROXY_POLICIES:
        assert Router.build(result.config.services, policy).ambiguous_prefixes == []


def test_the_older_resource_wins_whichever_spelling_it_uses() -> None:
    result = render_config([resource("late", ESTABLISHED, created="2025-01-01T00:00:00Z"),
                            resource("early", "/API/v1/x/Admin", created="2024-01-01T00:00:00Z")], [], {})
    assert outcome(result, "late")[0] == "PrefixConflict"
    assert result.config.services[0].prefixes == ["/API/v1/x/Admin"]


def test_an_accepted_respelt_prefix_is_routed_in_canonical_form_and_says_so() -> None:
    result = render_config([resource("tilde", "/%7Euser/%61pi/")], [], {})
    reason, message = outcome(result, "tilde")
    assert reason == "Accepted"
    assert "routed as /~user/api" in message
    assert result.config.services[0].prefixes == ["/~user/api"]


# -- prefixes no request can reach ---------------------------------------------------------

@pytest.mark.parametrize("prefix", [
    "/%73tatus", "/STATUS", "/Metrics/", "/%64ocs", "/openapi%2Ejson", "/HEALTH", "/readyz/", "/%6CIVEZ", "/",
    "/%2e/status",
])
def test_a_prefix_whose_key_is_a_gateway_endpoint_is_a_reserved_path(prefix: str) -> None:
    reason, _ = outcome(render_config([resource("sneaky", prefix)], [], {}), "sneaky")
    assert reason in ("ReservedPath", "InvalidPrefix")
    if "%2e" not in prefix:
        assert reason == "ReservedPath"


@pytest.mark.parametrize("prefix", [
    "/api/v1/y/admin%2e", "/api/v1/y/admin.", "/a;b", "/a%3Bb", "/a%2Fb", "/a%5Cb", "/a%00", "/a%252e", "/a%c0%ae",
    "/a%ef%bc%8e", "/a%20", "/a%23b", "/a%3Fb", "/adm%c4%b1n", "/a%e2%80%8b",
])
def test_a_prefix_the_path_policy_refuses_is_an_invalid_prefix(prefix: str) -> None:
    result = render_config([resource("bad", prefix), resource("good", "/good")], [], {})
    reason, message = outcome(result, "bad")
    assert reason == "InvalidPrefix"
    assert prefix in message
    assert [s.name for s in result.config.services] == ["good"]


@pytest.mark.parametrize("prefix", ["/team-b/%2e%2e/api/v1/x/admin", "/x/%2E/y", "/%2e%2e/x", "/x/.%2e/y"])
def test_a_dot_segment_in_any_spelling_is_an_invalid_prefix_rather_than_a_moved_route(prefix: str) -> None:
    result = render_config([resource("sneaky", prefix)], [], {})
    assert outcome(result, "sneaky")[0] == "InvalidPrefix"
    assert result.config.services == []


def test_a_lenient_policy_passed_to_the_renderer_accepts_what_it_allows() -> None:
    result = render_config([resource("params", "/a;b")], [], {}, PathPolicy(path_parameters="allow"))
    assert outcome(result, "params")[0] == "Accepted"
    assert outcome(render_config([resource("params", "/a;b")], [], {}), "params")[0] == "InvalidPrefix"


# -- the property: whatever is rendered, the router neither refuses nor confuses it ---------

BASES = ["/api/v1/x", "/api/v1/x/admin", "/api/v1/y", "/caf%C3%A9", "/a+b", "/status", "/metrics", "/m.json"]


@st.composite
def respelt(draw: st.DrawFn) -> str:
    base = draw(st.sampled_from(BASES))
    out: list[str] = []
    for ch in base:
        if ch.isalpha() and not out[-2:].count("%") and draw(st.booleans()):
            ch = ch.swapcase()
        if ch.isalnum() and draw(st.integers(0, 5)) == 0 and "%" not in base:
            out.append(f"%{ord(ch):02{draw(st.sampled_from('xX'))}}")
            continue
        out.append(ch)
    text = "".join(out)
    extra = draw(st.sampled_from(["", "", "/", ";p", "%2e", "/%2e%2e/x", "%3B", "/sub", ".json"]))
    return text + extra


SERVICES = st.lists(st.tuples(respelt(), st.integers(0, 3), st.lists(respelt(), max_size=2)), min_size=1,
                    max_size=6)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(SERVICES)
def test_no_rendered_config_has_a_prefix_the_router_refuses_or_finds_ambiguous(
        specs: list[tuple[str, int, list[str]]]) -> None:
    services = [resource(f"s{i}", prefix, created=f"202{year}-01-01T00:00:00Z",
                         aliases=sorted({a for a in aliases if a != prefix}))
                for i, (prefix, year, aliases) in enumerate(specs)]
    result = render_config(services, [], {})
    reserved = {route_key(p) for p in RESERVED_PATHS}
    owners: dict[str, str] = {}
    for svc in result.config.services:
        for prefix in svc.prefixes:
            key = route_key(prefix)
            assert key not in reserved, prefix
            assert owners.setdefault(key, svc.name) == svc.name, (prefix, owners)
    for policy in PROXY_POLICIES:
        router = Router.build(result.config.services, policy)
        assert router.ambiguous_prefixes == []
        assert router.refused_prefixes == []
        for svc in result.config.services:
            for prefix in svc.prefixes:
                match = router.resolve(prefix.rstrip("/") + "/z")
                assert match is not None, (prefix, policy)
                assert match.service.name == svc.name, (prefix, policy)
    # Whoever claimed a key first (oldest, then namespace and name) holds it.
    order = sorted(services, key=lambda r: (r.metadata.creation_timestamp, r.metadata.namespace, r.metadata.name))
    accepted = {s.name for s in result.config.services}
    for res in order:
        reason = outcome(result, res.metadata.name)[0]
        assert (reason == "Accepted") == (res.metadata.name in accepted)


# -- the CRD refuses malformed prefixes at admission (and offline, through its schema) -------

@pytest.mark.parametrize("prefix", ["/a;b", "/a%", "/a%zz", "/a%2", "/a#b", "/a?b", "/a b", "/a\\b", "/a/.",
                                    "/a/./b", "/a/../b", "/a//b", "/a/..", "/\u00e9"])
def test_the_crd_refuses_a_malformed_prefix_or_alias(tmp_path: Path, prefix: str) -> None:
    (tmp_path / "a.yaml").write_text(manifest("a", prefix))
    (tmp_path / "b.yaml").write_text(manifest("b", "/ok", aliases=[prefix]))
    loaded = load_folder(tmp_path)
    assert loaded.services == []
    # The pattern's problems name the field; the CEL rules' are on `spec` and name it in the message.
    assert any("a.yaml" in p and "pathPrefix" in p for p in loaded.problems), loaded.problems
    assert any("b.yaml" in p and ("spec.aliases" in p or "alias" in p) for p in loaded.problems), loaded.problems


@pytest.mark.parametrize("prefix", ["/api/v1/x/%61dmin", "/caf%C3%A9", "/a+b", "/~me/v1.2", "/x/a@b:c", "/api/"])
def test_the_crd_accepts_well_formed_prefixes(tmp_path: Path, prefix: str) -> None:
    (tmp_path / "a.yaml").write_text(manifest("a", prefix))
    assert load_folder(tmp_path).problems == []


# -- the file provider and a running gateway ------------------------------------------------

def test_an_established_service_that_respells_its_own_prefix_keeps_it(tmp_path: Path) -> None:
    source = FolderSource(tmp_path)
    (tmp_path / "zeta.yaml").write_text(manifest("zeta", "/api/v1/shared"))
    source.load()
    # Older by its timestamp: without first-claim ordering by route key it would win.
    (tmp_path / "alpha.yaml").write_text(manifest("alpha", "/API/v1/shared", created="2000-01-01T00:00:00Z"))
    config = source.load()
    assert [s.name for s in config.services] == ["zeta"]
    (tmp_path / "zeta.yaml").write_text(manifest("zeta", "/api/v1/Shared/"))
    config = source.load()
    assert [(s.name, s.prefixes) for s in config.services] == [("zeta", ["/api/v1/Shared"])]
    assert not source.kept
    assert all("alpha" in p for p in source.problems if "PrefixConflict" in p)


async def test_a_respelt_newcomer_never_switches_off_the_established_route_of_a_running_gateway(
        recording_upstream: RecordingUpstreamFactory, gateway_factory: GatewayFactory, tmp_path: Path) -> None:
    up = await recording_upstream()
    port = int(up.endpoint().port)
    write_atomic(tmp_path / "admin.yaml", manifest("admin", ESTABLISHED, namespace="team-a", mode="jwt",
                                                   port=port).encode())
    write_atomic(tmp_path / "public.yaml", manifest("public", "/api/v1/x", namespace="team-a", port=port).encode())
    gw = await gateway_factory(source=FolderSource(tmp_path), config_poll_s=0.05)
    assert (await gw.get("/api/v1/x/admin/keys"))[0] == 401
    for i, spelling in enumerate(["/api/v1/x/ADMIN", "/api/v1/x/%61dmin", "/API/V1/X/Admin/"]):
        write_atomic(tmp_path / f"sneaky{i}.yaml", manifest(f"sneaky{i}", spelling, namespace="team-b",
                                                            created="2000-01-01T00:00:00Z", port=port).encode())
    await poll(lambda: sum("PrefixConflict" in p for p in gw.state.source_problems) == 3, "conflicts reported")
    for path in ["/api/v1/x/admin/keys", "/api/v1/x/admin"]:
        assert (await gw.get(path))[0] == 401, path  # still the protected route, not 400 and not public
    assert (await gw.get("/api/v1/x/other"))[0] == 200
    status = json.loads((await gw.get("/status"))[2])["config"]
    assert sum("PrefixConflict" in p for p in status["source_problems"]) == 3
    assert all(not r.target.startswith("/api/v1/x/admin") for r in up.requests)


def test_a_prefix_refused_by_every_policy_has_no_key() -> None:
    with pytest.raises(PathError):
        route_key("/a%2Fb", PathPolicy(path_parameters="allow", encoded_delimiters="allow", double_encoding="allow",
                                       trailing_dots_and_spaces="allow", non_ascii="allow"))


def test_standalone_mode_judges_prefixes_by_the_proxys_own_path_policy(tmp_path: Path) -> None:
    (tmp_path / "files.yaml").write_text(manifest("files", "/files."))
    (tmp_path / "ok.yaml").write_text(manifest("ok", "/ok"))
    strict = prime(tmp_path, ProxySettings())
    assert [s.name for s in strict.load().services] == ["ok"]
    assert any("files: InvalidPrefix" in p for p in strict.problems), strict.problems
    lenient = prime(tmp_path, ProxySettings(paths=PathSettings(trailing_dots_and_spaces="allow")))
    assert lenient.problems == []
    assert sorted(s.name for s in lenient.load().services) == ["files", "ok"]
