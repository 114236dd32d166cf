"""Host routing (docs/host-routing.md): configured host names and wildcards, the one
normalisation of a request's host, Gateway API precedence (exact host, then the
longest wildcard suffix, then the default group; longest prefix inside a host), the
fall-through of a matched host without a matching path, and a hypothesis
differential test of the router against a naive reference matcher."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from vocelio_contract.config import GatewayConfig, Service
from vocelio_contract.hosts import candidate_hosts, host_covers, host_problem, request_host
from vocelio_contract.paths import PathError
from vocelio_proxy.policy.routing import Router


def svc(name: str, *prefixes: str, hosts: tuple[str, ...] = (), rewrite: str | None = None) -> Service:
    return Service(name=name, prefixes=list(prefixes), hosts=list(hosts), rewrite=rewrite)


def routed(router: Router, raw_host: str, path: str) -> str | None:
    match = router.match(path, request_host(raw_host))
    return None if match is None else match.service.name


# -- the configured host grammar --------------------------------------------------------------


@pytest.mark.parametrize("host", ["api.example.com", "*.example.com", "a", "x-1.y2.example", "*.a.b.c.d",
                                  "a" * 63 + ".com", ".".join(["a" * 49] * 5)])
def test_rfc_1123_names_and_leading_wildcards_are_host_names(host: str) -> None:
    assert host_problem(host) is None, host
    assert Service(name="s", prefixes=["/"], hosts=[host]).hosts == [host]


@pytest.mark.parametrize(("host", "why"), [
    ("API.example.com", "lower case"), ("api.example.com.", "dot"), ("api.example.com:8080", "port"),
    ("[::1]", "port"), ("10.0.0.1", "IP address"), ("a.b.123", "IP address"), ("*", "first label"),
    ("a.*.example.com", "first label"), ("*example.com", "first label"), ("**.example.com", "first label"),
    ("a_b.example.com", "RFC 1123"), ("-a.example.com", "RFC 1123"), ("a-.example.com", "RFC 1123"),
    ("a..example.com", "RFC 1123"), ("a" * 64 + ".com", "RFC 1123"), (".".join(["a" * 62] * 5), "253"),
    ("", "RFC 1123"), ("ex%61mple.com", "RFC 1123"), ("exa mple.com", "RFC 1123"), ("é.example.com", "RFC 1123"),
])
def test_anything_else_is_refused_with_a_reason(host: str, why: str) -> None:
    problem = host_problem(host)
    assert problem is not None, host
    assert why in problem, (host, problem)
    with pytest.raises(ValidationError, match=why.split()[0]):
        Service(name="s", prefixes=["/"], hosts=[host])


def test_a_service_may_not_repeat_a_host() -> None:
    with pytest.raises(ValidationError, match="repeat"):
        Service(name="s", prefixes=["/"], hosts=["a.example.com", "a.example.com"])


def test_the_config_refuses_two_services_on_one_host_and_prefix_but_not_on_different_hosts() -> None:
    GatewayConfig(services=[svc("a", "/x", hosts=("a.example.com",)), svc("b", "/x", hosts=("b.example.com",)),
                            svc("c", "/x")])
    with pytest.raises(ValidationError, match=r"on host a\.example\.com claimed by default/a and default/b"):
        GatewayConfig(services=[svc("a", "/x", hosts=("a.example.com",)), svc("b", "/x", hosts=("a.example.com",))])


def test_a_wildcard_covers_names_below_its_suffix_never_the_bare_domain() -> None:
    assert host_covers("*.example.com", "a.example.com")
    assert host_covers("*.example.com", "a.b.example.com")
    assert host_covers("*.example.com", "*.a.example.com")
    assert host_covers("*.example.com", "*.example.com")
    assert not host_covers("*.example.com", "example.com")
    assert not host_covers("*.example.com", "badexample.com")
    assert not host_covers("a.example.com", "b.example.com")
    assert candidate_hosts("a.b.example.com") == ["a.b.example.com", "*.b.example.com", "*.example.com", "*.com"]


# -- the request host, normalised once ------------------------------------------------------


@pytest.mark.parametrize(("raw", "host"), [
    ("api.example.com", "api.example.com"), ("API.Example.COM", "api.example.com"),
    ("api.example.com:8080", "api.example.com"), ("api.example.com.", "api.example.com"),
    ("API.example.com.:443", "api.example.com"), ("api.example.com:", "api.example.com"),
    # Not a routable name: the default group serves it, no configured name ever matches it.
    ("", ""), ("[::1]", ""), ("[::1]:80", ""), ("127.0.0.1", ""), ("127.0.0.1:8080", ""),
    ("api.example.com..", ""), ("ap%69.example.com", ""), ("api_.example.com", ""), ("a_b.example.com", ""),
    ("api .example.com", ""), ("api.example.com\x00", ""), ("api\t.example.com", ""), (" api.example.com", ""),
    ("a" * 64 + ".example.com", ""), ("api.example.com:80x", ""), ("api.example.com:\uff18\uff10", ""),
    ("api.example.\u212aom", ""),  # the Kelvin sign lower-cases to 'k' in Python, never here
    ("user@api.example.com", ""), ("*.example.com", ""), ("." + "a" * 60, ""),
])
def test_the_request_host_is_folded_stripped_of_its_port_and_one_dot_or_else_empty(raw: str, host: str) -> None:
    assert request_host(raw) == host


# -- precedence ---------------------------------------------------------------------------


def table() -> Router:
    return Router.build([
        svc("exact", "/", hosts=("api.example.com",)),
        svc("exact-deep", "/v2", hosts=("api.example.com",)),
        svc("wild", "/", hosts=("*.example.com",)),
        svc("wild-long", "/", hosts=("*.eu.example.com",)),
        svc("wild-path", "/reports", hosts=("*.example.com",)),
        svc("any", "/"),
        svc("any-deep", "/api/v1/deep"),
    ])


@pytest.mark.parametrize(("host", "path", "service"), [
    ("api.example.com", "/x", "exact"),
    ("api.example.com", "/v2/x", "exact-deep"),
    ("API.EXAMPLE.com:8443", "/x", "exact"),
    ("api.example.com.", "/x", "exact"),
    ("web.example.com", "/x", "wild"),
    ("a.b.example.com", "/x", "wild"),
    ("x.eu.example.com", "/x", "wild-long"),
    ("y.x.eu.example.com", "/x", "wild-long"),
    ("eu.example.com", "/x", "wild"),  # `*.eu.example.com` does not match the bare eu.example.com
    ("example.com", "/x", "any"),  # nor `*.example.com` the bare example.com
    ("other.org", "/x", "any"),
    ("10.0.0.1", "/x", "any"),
    ("[::1]:8080", "/x", "any"),
    ("", "/x", "any"),
    # A more specific host beats a longer prefix of a less specific one.
    ("api.example.com", "/api/v1/deep", "exact"),
    ("web.example.com", "/reports/1", "wild-path"),
])
def test_the_most_specific_host_wins_then_the_longest_prefix(host: str, path: str, service: str) -> None:
    assert routed(table(), host, path) == service


def test_a_matched_host_without_a_matching_path_falls_to_less_specific_hosts() -> None:
    router = Router.build([
        svc("exact", "/orders", hosts=("shop.example.com",)),
        svc("wild", "/catalog", hosts=("*.example.com",)),
        svc("any", "/help"),
    ])
    assert routed(router, "shop.example.com", "/orders/1") == "exact"
    assert routed(router, "shop.example.com", "/catalog/1") == "wild"
    assert routed(router, "shop.example.com", "/help") == "any"
    assert routed(router, "shop.example.com", "/nothing") is None
    assert routed(router, "other.example.com", "/orders/1") is None
    match = router.match("/catalog/1", "shop.example.com")
    assert match is not None
    assert match.host == "*.example.com"


def test_a_host_named_only_by_services_keeps_the_default_group_for_every_other_host() -> None:
    router = Router.build([svc("tenant", "/", hosts=("tenant.example.com",)), svc("platform", "/api")])
    assert routed(router, "tenant.example.com", "/api") == "tenant"
    assert routed(router, "platform.example.com", "/api") == "platform"
    assert routed(router, "platform.example.com", "/") is None
    assert router.hosts == ["tenant.example.com"]
    assert router.routes_by_host


def test_without_hosts_the_request_host_is_never_looked_at() -> None:
    router = Router.build([svc("a", "/a")])
    assert not router.routes_by_host
    assert routed(router, "anything.example.com", "/a") == "a"


def test_a_refusal_in_a_more_specific_host_is_final() -> None:
    router = Router.build([svc("admin", "/x/admin", hosts=("api.example.com",)), svc("any", "/")])
    # `/x/ADMIN` falls under the host's /x/admin when letter case is ignored: refused, not sent to `any`.
    with pytest.raises(PathError):
        router.resolve("/x/ADMIN", "api.example.com")
    assert router.match("/x/ADMIN", "other.example.com") is not None


def test_a_passed_over_host_refuses_a_format_suffix_reading_of_its_routes() -> None:
    """`/x/admin.json` on the host is not under its /x/admin, and falls to the default
    group's /; a backend that strips `.json` would read /x/admin, which the host routes
    elsewhere: refused, as it is without hosts."""
    router = Router.build([svc("admin", "/x/admin", hosts=("api.example.com",)), svc("any", "/")])
    with pytest.raises(PathError, match="format suffix"):
        router.resolve("/x/admin.json", "api.example.com")
    assert routed(router, "other.example.com", "/x/admin.json") == "any"
    assert routed(router, "api.example.com", "/x/report.json") == "any"
    # The same when the group that takes the path is a wildcard's.
    router = Router.build([svc("admin", "/x/admin", hosts=("api.example.com",)),
                           svc("wild", "/", hosts=("*.example.com",))])
    with pytest.raises(PathError, match="format suffix"):
        router.resolve("/x/admin.json", "api.example.com")
    assert routed(router, "web.example.com", "/x/admin.json") == "wild"


def test_rewrite_applies_to_the_route_that_matched_on_its_host() -> None:
    router = Router.build([svc("a", "/svc", hosts=("a.example.com",), rewrite="/"), svc("b", "/svc")])
    match = router.match("/svc/items", "a.example.com")
    assert match is not None
    assert match.upstream_path == "/items"
    other = router.match("/svc/items", "b.example.com")
    assert other is not None
    assert other.upstream_path == "/svc/items"


def test_every_host_group_reports_its_prefixes() -> None:
    router = Router.build([svc("a", "/a", hosts=("a.example.com",)), svc("b", "/b")])
    assert router.prefixes == ["/a", "/b"]


# -- differential: the router against a naive reference ---------------------------------------

LABELS = ["a", "b", "api", "example", "com", "eu"]
NAMES = st.lists(st.sampled_from(LABELS), min_size=1, max_size=4).map(".".join)
CONFIG_HOSTS = st.one_of(NAMES, NAMES.map(lambda n: "*." + n))
PATHS = st.lists(st.sampled_from(["x", "y", "v2"]), max_size=2).map(lambda s: "/" + "/".join(s))


def reference(services: list[Service], host: str, path: str) -> str | None:
    """Every (host, prefix) route that matches, ranked by host specificity then prefix
    length; the first wins. No dicts, no label stripping: plain comparisons."""
    best: tuple[int, int, int] | None = None
    winner = None
    for s in services:
        for configured in s.hosts or [""]:
            if configured == "":
                rank = 0
            elif configured == host:
                rank = 2 * 1000 + len(configured)
            elif configured.startswith("*.") and host.endswith(configured[1:]) and len(host) > len(configured) - 1:
                rank = 1000 + len(configured)
            else:
                continue
            for prefix in s.prefixes:
                if prefix == "/" or path == prefix or path.startswith(prefix + "/"):
                    key = (rank, len(prefix), 0)
                    if best is None or key > best:
                        best, winner = key, s.name
    return winner


@st.composite
def route_tables(draw: st.DrawFn) -> list[Service]:
    services: list[Service] = []
    taken: set[tuple[str, str]] = set()
    for i in range(draw(st.integers(1, 10))):
        hosts = sorted(set(draw(st.lists(CONFIG_HOSTS, max_size=2))))
        prefix = draw(PATHS)
        if any((h, prefix) in taken for h in hosts or [""]):
            continue  # the renderer never lets two services share a (host, prefix)
        taken.update((h, prefix) for h in hosts or [""])
        services.append(Service(name=f"s{i}", prefixes=[prefix], hosts=hosts))
    return services


SPELLINGS: list[Callable[[str], str]] = [str, str.upper, lambda n: n + ".", lambda n: n + ":8080"]


@st.composite
def request_hosts(draw: st.DrawFn, services: list[Service]) -> str:
    """Mostly a name at or below a configured host (so exact names and wildcards at
    several depths compete for it), sometimes any name or one that is not a name."""
    configured = [h for s in services for h in s.hosts]
    kind = draw(st.integers(0, 3))
    if configured and kind < 3:
        base = draw(st.sampled_from(configured))
        if base.startswith("*."):
            base = draw(st.lists(st.sampled_from(LABELS), min_size=1, max_size=2).map(".".join)) + base[1:]
        name = base
    elif kind == 3 and draw(st.booleans()):
        return draw(st.sampled_from(["", "[::1]", "10.0.0.1", "a_b.com", "ex%61mple.com"]))
    else:
        name = draw(NAMES)
    spell: Callable[[str], str] = draw(st.sampled_from(SPELLINGS))
    return spell(name)


@settings(max_examples=500, deadline=None)
@given(route_tables(), st.data(), PATHS)
def test_the_router_agrees_with_a_naive_reference_matcher(services: list[Service], data: st.DataObject,
                                                          path: str) -> None:
    raw = data.draw(request_hosts(services))
    router = Router.build(services)
    host = request_host(raw)
    match = router.match(path, host)
    assert (None if match is None else match.service.name) == reference(services, host, path)
