"""Longest-prefix routing on segment boundaries, with prefix rewrite."""

from vocelio_proxy.config import Service
from vocelio_proxy.routing import Router, rewrite_path


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
    assert a is not None and b is not None
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
