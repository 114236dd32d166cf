"""Longest-prefix routing on segment boundaries, with prefix rewrite; letter
case and canonical prefixes (docs/security/paths.md)."""

import pytest

from vocelio_contract.config import Service
from vocelio_contract.paths import PathError, PathPolicy
from vocelio_proxy.policy.routing import Router, rewrite_path


def svc(name: str, *prefixes: str, rewrite: str | None = None) -> Service:
    return Service(name=name, prefixes=list(prefixes), rewrite=rewrite)


def test_the_longest_matching_prefix_wins() -> None:
    router = Router.build([svc("api", "/api"), svc("billing", "/api/v1/billing"), svc("v1", "/api/v1")])
    assert router.match("/api/v1/billing/invoices").service.name == "billing"  # type: ignore[union-attr]
    assert router.match("/api/v1/other").service.name == "v1"  # type: ignore[union-attr]
    assert router.match("/api/x").service.name == "api"  # type: ignore[union-attr]


def test_prefixes_match_only_on_segment_boundaries() -> None:
    router = Router.build([svc("billing", "/api/v1/billing")])
    assert router.match("/api/v1/billingx") is None
    assert router.match("/api/v1/billing") is not None
    assert router.match("/api/v1/billing/") is not None


def test_unknown_paths_do_not_match() -> None:
    assert Router.build([svc("a", "/a")]).match("/b") is None


def test_alias_prefixes_route_to_the_same_service() -> None:
    router = Router.build([svc("ai-agents", "/api/v1/ai-agents", "/ai-agents/v1", rewrite="/")])
    a = router.match("/api/v1/ai-agents/agents")
    b = router.match("/ai-agents/v1/agents")
    assert a is not None
    assert b is not None
    assert a.service is b.service
    assert a.upstream_path == b.upstream_path == "/agents"


def test_rewrite_replaces_the_matched_prefix() -> None:
    assert rewrite_path("/api/v1/x/items", "/api/v1/x", "/") == "/items"
    assert rewrite_path("/api/v1/x", "/api/v1/x", "/") == "/"
    assert rewrite_path("/api/v1/x/items", "/api/v1/x", "/v2") == "/v2/items"
    assert rewrite_path("/api/v1/x/items", "/api/v1/x", None) == "/api/v1/x/items"


def test_a_root_prefix_catches_everything_else() -> None:
    router = Router.build([svc("root", "/"), svc("a", "/a")])
    assert router.match("/a/b").service.name == "a"  # type: ignore[union-attr]
    assert router.match("/zzz").service.name == "root"  # type: ignore[union-attr]


# -- letter case, canonical prefixes, refusals ---------------------------------------------


def nested() -> list[Service]:
    return [svc("public", "/api/v1/x"), svc("admin", "/api/v1/x/admin")]


@pytest.mark.parametrize("path", ["/api/v1/x/ADMIN", "/api/v1/x/Admin/keys", "/api/v1/X/admin", "/API/v1/x",
                                  "/Api/V1/X/items"])
def test_a_path_whose_route_changes_when_case_is_ignored_is_refused_by_default(path: str) -> None:
    router = Router.build(nested())
    with pytest.raises(PathError):
        router.resolve(path)
    assert router.match(path) is None


def test_exact_case_paths_route_normally_under_the_default() -> None:
    router = Router.build(nested())
    assert router.resolve("/api/v1/x/admin/keys").service.name == "admin"  # type: ignore[union-attr]
    assert router.resolve("/api/v1/x/Other").service.name == "public"  # type: ignore[union-attr]
    assert router.resolve("/api/v1/x/administrator").service.name == "public"  # type: ignore[union-attr]
    assert router.resolve("/nowhere") is None


def test_insensitive_case_routes_to_the_most_specific_route_and_forwards_the_path_as_sent() -> None:
    router = Router.build([svc("public", "/api/v1/x"), svc("admin", "/api/v1/x/admin", rewrite="/v2")],
                          PathPolicy(case="insensitive"))
    match = router.resolve("/API/v1/x/ADMIN/Keys")
    assert match is not None
    assert match.service.name == "admin"
    assert match.prefix == "/api/v1/x/admin"
    assert match.upstream_path == "/v2/Keys"
    assert router.resolve("/api/v1/X/Other").service.name == "public"  # type: ignore[union-attr]


def test_sensitive_case_routes_on_the_exact_spelling_only() -> None:
    router = Router.build(nested(), PathPolicy(case="sensitive"))
    assert router.resolve("/api/v1/x/ADMIN").service.name == "public"  # type: ignore[union-attr]
    assert router.resolve("/API/v1/x") is None


def test_prefixes_that_differ_only_by_case_are_refused_unless_case_is_sensitive() -> None:
    services = [svc("upper", "/api/Admin"), svc("lower", "/api/admin")]
    router = Router.build(services)
    assert router.ambiguous_prefixes == ["/api/Admin", "/api/admin"]
    with pytest.raises(PathError):
        router.resolve("/api/admin/x")
    sensitive = Router.build(services, PathPolicy(case="sensitive"))
    assert sensitive.resolve("/api/Admin/x").service.name == "upper"  # type: ignore[union-attr]
    assert sensitive.ambiguous_prefixes == []


def test_case_variants_of_one_services_prefixes_are_not_ambiguous() -> None:
    router = Router.build([svc("a", "/Docs", "/docs")])
    assert router.ambiguous_prefixes == []
    assert router.resolve("/Docs/x").prefix == "/Docs"  # type: ignore[union-attr]
    assert router.resolve("/docs/x").prefix == "/docs"  # type: ignore[union-attr]
    with pytest.raises(PathError):
        router.resolve("/DOCS/x")


def test_prefixes_are_compared_in_canonical_form() -> None:
    router = Router.build([svc("tilde", "/%7euser/api"), svc("at", "/u/a%40b")])
    assert router.prefixes == ["/u/a@b", "/~user/api"]
    assert router.resolve("/~user/api/x").service.name == "tilde"  # type: ignore[union-attr]
    assert router.resolve("/u/a@b/x").service.name == "at"  # type: ignore[union-attr]


def test_prefixes_the_path_policy_refuses_are_reported_and_unreachable() -> None:
    router = Router.build([svc("params", "/a;b"), svc("dot", "/files."), svc("ok", "/ok")])
    assert router.refused_prefixes == ["/a;b", "/files."]
    assert router.prefixes == ["/ok"]


def test_two_prefixes_that_canonicalise_alike_for_different_services_are_refused() -> None:
    router = Router.build([svc("a", "/~x"), svc("b", "/%7Ex")], PathPolicy(case="sensitive"))
    with pytest.raises(PathError):
        router.resolve("/~x/y")


@pytest.mark.parametrize("path", ["/CAF%C3%89/admin", "/caf%C3%A9/ADMIN"])
def test_non_ascii_prefixes_are_compared_with_unicode_case_folding(path: str) -> None:
    router = Router.build([svc("root", "/"), svc("cafe", "/caf%C3%A9/admin")])
    with pytest.raises(PathError):
        router.resolve(path)
    assert router.resolve("/caf%C3%A9/admin/x").service.name == "cafe"  # type: ignore[union-attr]
    assert router.resolve("/caf%C3%A9/other").service.name == "root"  # type: ignore[union-attr]


# -- route keys: one comparison for the router, the renderer and the file provider ----------


@pytest.mark.parametrize(("first", "second"), [
    ("/api/x", "/API/X"), ("/api/x/admin", "/api/x/%61dmin"), ("/caf%C3%A9", "/CAF%C3%89"), ("/a+b", "/a%2Bb"),
    ("/api/x", "/api/x/"),
])
def test_prefixes_of_different_services_with_one_route_key_make_every_path_under_them_ambiguous(
        first: str, second: str) -> None:
    router = Router.build([svc("first", first), svc("second", second)])
    assert len(router.ambiguous_prefixes) == len(set(router.prefixes)) >= 1
    for prefix in router.prefixes:
        with pytest.raises(PathError):
            router.resolve(prefix + "/x")


def test_escapes_a_decoding_backend_reads_alike_are_one_route_even_when_case_is_sensitive() -> None:
    router = Router.build([svc("plus", "/a+b"), svc("escaped", "/a%2Bb")], PathPolicy(case="sensitive"))
    assert router.ambiguous_prefixes == ["/a%2Bb", "/a+b"]
    cased = Router.build([svc("upper", "/A"), svc("lower", "/a")], PathPolicy(case="sensitive"))
    assert cased.ambiguous_prefixes == []


def test_unicode_case_variants_of_one_services_prefixes_route_to_it() -> None:
    router = Router.build([svc("root", "/"), svc("cafe", "/caf%C3%A9", "/CAF%C3%89")])
    assert router.ambiguous_prefixes == []
    assert router.resolve("/CAF%C3%89/x").service.name == "cafe"  # type: ignore[union-attr]
    assert router.resolve("/caf%C3%A9/x").service.name == "cafe"  # type: ignore[union-attr]


# -- format suffixes (Rails `(.:format)`, Spring suffix pattern matching) ------------------


@pytest.mark.parametrize("path", [
    "/api/v1/x/admin.json", "/api/v1/x/admin.xml/", "/api/v1/x/admin.tar.gz", "/api/v1/x/admin.json/keys",
    "/api/v1/x/admin.j", "/api/v1/x/admin.json.", "/api/v1/x/admin..json",
])
def test_a_format_suffix_that_would_select_a_deeper_route_is_refused(path: str) -> None:
    router = Router.build(nested())
    with pytest.raises(PathError, match="format suffix"):
        router.resolve(path)
    assert router.match(path) is None


@pytest.mark.parametrize("path", ["/api/v1/x/ADMIN.json", "/api/v1/X/admin.json", "/API/v1/x/Admin.json/keys"])
def test_a_format_suffix_on_a_case_variant_of_a_deeper_route_is_refused(path: str) -> None:
    with pytest.raises(PathError):
        Router.build(nested()).resolve(path)
    with pytest.raises(PathError):
        Router.build(nested(), PathPolicy(case="insensitive")).resolve(path)


def test_a_segment_is_cut_at_every_dot_not_only_the_first() -> None:
    router = Router.build([svc("public", "/a"), svc("dotted", "/a/b.c")])
    with pytest.raises(PathError):
        router.resolve("/a/b.c.json")  # Spring reads it as /a/b.c
    assert router.resolve("/a/b.d.json").service.name == "public"  # type: ignore[union-attr]


def test_a_format_suffix_on_any_segment_below_the_route_chosen_is_checked() -> None:
    router = Router.build([svc("public", "/a"), svc("deep", "/a/b/c")])
    for path in ["/a/b/c.json", "/a/b.json/c", "/a/b.json/c/d", "/a/b.JSON/c/d.xml"]:
        with pytest.raises(PathError):
            router.resolve(path)
    assert router.resolve("/a/b.json/d").service.name == "public"  # type: ignore[union-attr]
    assert router.resolve("/a/b/c/d.json").service.name == "deep"  # type: ignore[union-attr]


@pytest.mark.parametrize(("path", "name"), [
    ("/api/v1/x/report.json", "public"), ("/api/v1/x/administrator.json", "public"),
    ("/api/v1/x/admin/keys.json", "admin"), ("/api/v1/x/admin/.json", "admin"), ("/api/v1/x/.admin", "public"),
    ("/api/v1/x/v1.2/admin", "public"), ("/api/v1/x/admin-x.json", "public"), ("/api/v1/x/adminx.json", "public"),
])
def test_dots_that_no_suffix_stripping_backend_reads_as_a_deeper_route_are_routed(path: str, name: str) -> None:
    assert Router.build(nested()).resolve(path).service.name == name  # type: ignore[union-attr]


def test_a_route_with_a_dotted_segment_keeps_its_traffic_next_to_its_undotted_sibling() -> None:
    router = Router.build([svc("api", "/api"), svc("v1", "/api/v1"), svc("v11", "/api/v1.1")])
    for path in ["/api/v1.1", "/api/v1.1/users", "/api/v1.1/users.json", "/api/v1.1/v1.json"]:
        assert router.resolve(path).service.name == "v11", path  # type: ignore[union-attr]
    assert router.resolve("/api/v1/users.json").service.name == "v1"  # type: ignore[union-attr]
    for path in ["/api/v1.json/users", "/api/v1.1.json"]:  # read as /api/v1/users, /api/v1.1 when stripped
        with pytest.raises(PathError):
            router.resolve(path)


def test_format_suffixes_are_compared_with_unicode_case_folding_for_non_ascii_routes() -> None:
    router = Router.build([svc("root", "/"), svc("cafe", "/caf%C3%A9"), svc("admin", "/x/caf%C3%A9")])
    for path in ["/caf%C3%A9.json", "/CAF%C3%89.json", "/x/CAF%C3%89.json/keys"]:
        with pytest.raises(PathError):
            router.resolve(path)
    assert router.resolve("/caf%C3%A9s.json").service.name == "root"  # type: ignore[union-attr]


def test_format_suffix_allow_routes_a_suffixed_segment_literally() -> None:
    router = Router.build(nested(), PathPolicy(format_suffix="allow"))
    assert router.resolve("/api/v1/x/admin.json").service.name == "public"  # type: ignore[union-attr]


def test_format_suffixes_with_sensitive_case_compare_the_exact_spelling() -> None:
    router = Router.build(nested(), PathPolicy(case="sensitive"))
    with pytest.raises(PathError):
        router.resolve("/api/v1/x/admin.json")
    assert router.resolve("/api/v1/x/ADMIN.json").service.name == "public"  # type: ignore[union-attr]


def test_a_path_no_route_matches_is_unrouted_whatever_its_suffix() -> None:
    assert Router.build([svc("admin", "/x/admin")]).resolve("/y/admin.json") is None


@pytest.mark.parametrize("policy", [PathPolicy(), PathPolicy(case="sensitive"), PathPolicy(case="insensitive")])
@pytest.mark.parametrize("protected", ["/x/a+b", "/x/a%2Bb"])
def test_a_path_that_reaches_a_deeper_prefix_once_decoded_is_refused(policy: PathPolicy, protected: str) -> None:
    router = Router.build([svc("public", "/x"), svc("protected", protected)], policy)
    other = "/x/a%2Bb" if "+" in protected else "/x/a+b"
    for path in [other, other + "/keys"]:
        with pytest.raises(PathError, match="once decoded"):
            router.resolve(path)
    assert router.resolve(protected + "/keys").service.name == "protected"  # type: ignore[union-attr]
    assert router.resolve("/x/a+c").service.name == "public"  # type: ignore[union-attr]
