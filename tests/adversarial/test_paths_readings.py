"""No backend reading of a forwarded path lands under another route than the one
whose policy the gateway applied. Paths are generated from pieces attackers use
(dot segments, `;` parameters, encoded separators, fragments, double and
overlong encodings, fullwidth and case-mapped Unicode, trailing dots and
spaces, letter case, format suffixes); for every path the gateway accepts, each
of 1,536 backend readings (tests/harness/paths_tools.py) of the path sent
upstream must choose the same route with the same table."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.harness.paths_tools import Reading, all_readings, route_of
from vocelio_contract.config import Service
from vocelio_contract.paths import DEFAULT_POLICY, PathError, PathPolicy, normalize_path
from vocelio_proxy.policy.routing import Router

PREFIXES = ["/", "/api/v1/x", "/api/v1/x/admin", "/api/v1/x/admin/keys", "/api/v1/y", "/a", "/a/b", "/a/b.c",
            "/a/b+c"]
SERVICES = [Service(name=f"s{i}", prefixes=[p]) for i, p in enumerate(PREFIXES)]
READINGS = all_readings()

# Pieces the default policy accepts (alone), and pieces it exists to refuse.
BENIGN = [
    "/", "/", "/", ".", "..", "%2e", "%2E", "%2e%2e", "A", "a", "admin", "ADMIN", "Admin", "adm", "in", "api", "v1",
    "x", "X", "y", "b", "B", "keys", "%41", "%61", "%64", "~", "%7e", "+", "%2b", "@", "%40", "%c3%a9", "%20", "-",
    "\u00c3\u00a9", "%25", "!", ".json", ".c", "c", "%2ejson", ".tar.gz",
]
HOSTILE = [
    ";", ";x=1", "%2f", "%2F", "%5c", "%23", "#", "%3b", "%3B", " ", "%09", "%00", "%252e", "%252f", "%25%32%65",
    "%u002e", "%c0%ae", "%e0%80%ae", "%ef%bc%8e", "%ef%bc%8f", "%c4%b1", "%e2%84%aa", "%c5%bf", "\\", "%2541",
    "\u00c4\u00b1", "\u00ef\u00bc\u008e", "%3f", "%", "%2", "%c2%a0", "\x00", "%2e%20", "%ef%bc%a1",
    "%e2%80%8b", ".%20",
]
# Mostly benign pieces, so that many generated paths are accepted and their readings checked.
PIECE = st.sampled_from(BENIGN * 12 + HOSTILE)
TAILS = st.lists(PIECE, max_size=10).map("".join)
PATHS = st.one_of(
    TAILS.map(lambda tail: "/" + tail),
    TAILS.map(lambda tail: "/api/v1/x" + tail),
    TAILS.map(lambda tail: "/api/v1/x/" + tail),
    st.tuples(st.sampled_from(["/api/v1/x/", "/API/V1/X/", "/a/", "/api/v1/x/y/../"]), TAILS,
              st.sampled_from(["admin", "b", "keys", "admin/keys", "b%2bc", "b+c"]), TAILS).map("".join),
)


def backend_routes(forwarded: str, readings: list[Reading]) -> dict[str | None, list[Reading]]:
    out: dict[str | None, list[Reading]] = {}
    for reading in readings:
        route = route_of(reading.read(forwarded), PREFIXES, reading.case_insensitive, reading.format_suffix)
        out.setdefault(route, []).append(reading)
    return out


def misreadings(raw: str, policy: PathPolicy, readings: list[Reading]) -> dict[str | None, object]:
    """The backend readings of an accepted path that land under another route than the
    one applied (route -> sample readings); empty when refused, unrouted or in agreement."""
    try:
        canonical = normalize_path(raw, policy)
        match = Router.build(SERVICES, policy).resolve(canonical)
    except PathError:
        return {}
    if match is None:
        return {}
    routes = backend_routes(match.upstream_path, readings)
    return {route: rs[:2] for route, rs in routes.items() if route != match.prefix}


def check(raw: str, policy: PathPolicy, readings: list[Reading]) -> str | None:
    """Assert the property for one path; returns the prefix routed (None: refused or unrouted)."""
    others = misreadings(raw, policy, readings)
    assert not others, f"{raw!r} routed under one prefix, but backends read: {others}"
    try:
        match = Router.build(SERVICES, policy).resolve(normalize_path(raw, policy))
    except PathError:
        return None
    return None if match is None else match.prefix


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(PATHS)
def test_every_backend_reading_of_an_accepted_path_lands_under_the_route_applied(raw: str) -> None:
    assert not misreadings(raw, DEFAULT_POLICY, READINGS)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(PATHS)
def test_stripping_path_parameters_keeps_every_reading_on_the_route_applied(raw: str) -> None:
    assert not misreadings(raw, PathPolicy(path_parameters="strip"), READINGS)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(PATHS)
def test_insensitive_case_routing_agrees_with_every_case_insensitive_reading(raw: str) -> None:
    assert not misreadings(raw, PathPolicy(case="insensitive"), [r for r in READINGS if r.case_insensitive])


# Paths built around format suffixes: a route's segment, a suffix, more pieces.
SUFFIXED = st.tuples(
    st.sampled_from(["/api/v1/x/", "/API/v1/x/", "/a/", "/api/v1/x/admin/", "/api/v1/x/y/../", "/"]),
    st.sampled_from(["admin", "ADMIN", "%61dmin", "b", "B", "keys", "a", "api", "b.c", "b.C", "b+c", "b%2Bc"]),
    st.sampled_from([".json", ".c", ".x.y", "%2ejson", ".JSON", ".c.d", ".", ".json/", ".x/keys"]),
    TAILS).map("".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(SUFFIXED, PATHS))
def test_a_backend_that_strips_format_suffixes_reads_every_accepted_path_under_the_route_applied(
        raw: str) -> None:
    assert not misreadings(raw, DEFAULT_POLICY, [r for r in READINGS if r.format_suffix])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(SUFFIXED)
def test_format_suffixes_with_case_sensitive_routing_agree_with_every_case_sensitive_reading(raw: str) -> None:
    assert not misreadings(raw, PathPolicy(case="sensitive"), [r for r in READINGS if not r.case_insensitive])


# Known spellings of the protected `/api/v1/x/admin` that a lax gateway routes under
# `/api/v1/x`: each is refused, or routed under the protected prefix itself.
ATTACKS = [
    "/api/v1/x/admin#", "/api/v1/x/admin%23", "/api/v1/x/ADMIN", "/api/v1/x/Admin", "/API/V1/X/ADMIN",
    "/api/v1/x/admin;jsessionid=1", "/api/v1/x;foo/admin", "/api/v1/x/..;/x/admin", "/api/v1/x/admin%3b",
    "/api/v1/x/admin.", "/api/v1/x/admin..", "/api/v1/x/admin%2e", "/api/v1/x/admin%20", "/api/v1/x/admin%09",
    "/api/v1/x/admin%00", "/api/v1/x/admin%2e%20", "/api/v1/x/admin%252e", "/api/v1/x/adm%69n",
    "/api/v1/x/%61dmin", "/api/v1/x/adm%c4%b1n", "/api/v1/x/%ef%bd%81dmin", "/api/v1/x/admin%ef%bc%8e",
    "/api/v1/x/y/..%2fadmin", "/api/v1/x/y/..%5cadmin", "/api/v1/x/y/..\\admin", "/api/v1/x/y/%2e%2e/admin",
    "/api/v1/x/y/%c0%ae%c0%ae/admin", "/api/v1/x/y/%252e%252e/admin", "/api/v1/x/y/%u002e%u002e/admin",
    "/api/v1/x/y/.%2e/admin", "/api/v1/x/y/%ef%bc%8e%ef%bc%8e/admin", "/api/v1/x//admin", "/api/v1/x/./admin",
    "/api/v1/x/admin%c2%a0", "/api/v1/x/admin%e2%80%8b", "/api/v1/x/\u00c4\u00b1",
]


@pytest.mark.parametrize("raw", ATTACKS)
def test_known_spellings_of_a_protected_prefix_never_get_the_public_routes_policy(raw: str) -> None:
    assert check(raw, DEFAULT_POLICY, READINGS) in (None, "/api/v1/x/admin")
