"""The renderer: one pure function from the full set of resources and
discovered endpoints to one sealed `GatewayConfig` plus a per-resource outcome
(accepted, conflicts, unresolved references, endpoint counts) that becomes
status. Deterministic: the same input gives byte-identical output. Called by
the operator's reconcile loop and by the standalone file provider.

Prefixes are judged as the proxy's router will route them: canonicalised with a
path policy (`vocelio_contract.paths`) and compared by `paths.route_key`, the key
the router uses. A prefix the policy refuses can never be reached
(`InvalidPrefix`); one whose canonical form is a gateway endpoint is
`ReservedPath`; one whose key an older service already claims (`/api/x/ADMIN`,
`/api/x/%61dmin` against `/api/x/admin`) is `PrefixConflict`, so the newcomer is
rejected and the established route keeps serving (the router would refuse every
request under both). The config carries the canonical prefixes.

The operator renders once for every proxy without knowing each proxy's path
settings, so the policy defaults to the strictest (`paths.DEFAULT_POLICY`:
letter case ignored when comparing, every ambiguous spelling refused). Prefixes
the strict policy accepts canonicalise identically under every other policy, so
the rendered config means the same to every proxy. Standalone mode passes the
proxy's own policy.

Host names (docs/host-routing.md): a service claims each of its prefixes on each of
its `hostnames` (or, naming none, on the default host every other request falls
to); two services conflict only on the same (host, prefix key).

Validated once, at the boundary: the resource models (and the EndpointSlice
parser) enforce everything the config model requires, so the renderer builds the
config as plain data and serialises it without a second validation pass (the
bulk validation of data it built itself was most of a render's time). A test
holds the two together: every rendered config parses back into `GatewayConfig`
and serialises to the same bytes (tests/unit/test_render_output.py)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from operator import itemgetter
from typing import Any, NamedTuple

from pydantic_core import to_json

from vocelio_contract.config import IDEMPOTENT_METHODS, SCHEMA_VERSION, GatewayConfig, RateTier, TierMatch, parse_config
from vocelio_contract.paths import DEFAULT_POLICY, PathError, PathPolicy, normalize_path, route_key
from vocelio_contract.reserved import RESERVED_PATHS
from vocelio_operator.model.resources import DiscoveredEndpoint, RateTierResource, ServiceRef, VocelioServiceResource
from vocelio_operator.translation.tenancy.grants import reference_permitted
from vocelio_operator.translation.tenancy.policy import TenancyPolicy

_BY_ADDRESS = itemgetter(0, 1)
#: The serialised config opens with its schema version; the hash goes right after it.
_OPENING = b'{"schema_version":%d,' % SCHEMA_VERSION

EndpointIndex = Mapping[tuple[str, str], Sequence[DiscoveredEndpoint]]


@dataclass(frozen=True)
class Outcome:
    """What happened to one resource in a render; the status module turns it into conditions."""

    kind: str
    id: str
    generation: int
    accepted: bool = True
    accepted_reason: str = "Accepted"
    accepted_message: str = "Resource is valid and routed"
    resolved: bool = True
    resolved_reason: str = "ResolvedRefs"
    resolved_message: str = "All references resolved"
    ready_endpoints: int = 0
    total_endpoints: int = 0


@dataclass(frozen=True)
class RenderResult:
    """The rendered config as written to a ConfigMap or file (`text`, exactly
    `GatewayConfig.to_json()` of the same config), its content hash, its service
    count, and each resource's outcome."""

    text: str
    hash: str
    services: int
    outcomes: dict[str, Outcome]

    @property
    def version(self) -> str:
        return self.hash[:12]

    @cached_property
    def config(self) -> GatewayConfig:
        """The config as the contract's model, parsed (and validated) on first use: for
        standalone mode, the CLI and tests; the operator writes `text` and never needs it."""
        return parse_config(self.text)


def _order_key(res: VocelioServiceResource) -> tuple[str, str, str]:
    # Oldest first: the older resource keeps a contested prefix.
    return (res.metadata.creation_timestamp or "9999", res.metadata.namespace, res.metadata.name)


def _resolve_port(ref: ServiceRef, ep: DiscoveredEndpoint) -> int | None:
    if isinstance(ref.port, str):
        # A name (the model turns a string of digits into a number).
        return ep.ports.get(ref.port)
    number = ref.port
    if number in ep.ports.values():
        return number
    if len(ep.ports) == 1:
        # A single-port Service: the reference names the Service port, the slice
        # carries the pod's target port.
        return next(iter(ep.ports.values()))
    return None


#: Why a backend did not resolve, most telling first: the ResolvedRefs reason is the first present.
_REASONS = ("RefNotPermitted", "StaticEndpointsDisabled", "AddressNotAllowed", "BackendNotFound")


def _backends(res: VocelioServiceResource, endpoints: EndpointIndex,
              tenancy: TenancyPolicy | None = None) -> tuple[list[dict[str, Any]], list[tuple[str, str]], int, int]:
    """Rendered backends, (reason, message) problems, ready and total endpoint counts. With a
    tenancy policy (cluster mode), endpoints it refuses are left out and reported as problems.
    Endpoints are gathered as (address, port, weight, ready, name) rows and become the
    config's dicts (in `Endpoint`'s field order) once sorted and de-duplicated."""
    backends: list[dict[str, Any]] = []
    problems: list[tuple[str, str]] = []
    ready = total = 0
    for index, spec in enumerate(res.spec.backends):
        eps: list[tuple[str, int, int, bool, str | None]] = []
        if spec.static_endpoints is not None:
            name = spec.name or f"static-{index}"
            for st in spec.static_endpoints:
                refused = None if tenancy is None else tenancy.addresses.static_refusal(st.address) or \
                    tenancy.fence.refusal(res.metadata.namespace, st.address, tenancy.addresses.forms)
                if refused is not None:
                    reason = "AddressNotAllowed" if tenancy and tenancy.addresses.static_endpoints \
                        else "StaticEndpointsDisabled"
                    problems.append((reason, f"backend {name}: {refused}"))
                    continue
                eps.append((st.address, st.port, st.weight, True, None))
        else:
            ref = spec.service_ref
            assert ref is not None
            namespace = ref.namespace or res.metadata.namespace
            name = spec.name or f"{namespace}-{ref.name}"
            found = endpoints.get((namespace, ref.name))
            if tenancy is not None and not reference_permitted(res.metadata.namespace, namespace, ref.name,
                                                               tenancy.grants.get(namespace, ())):
                # Nothing of the other namespace is rendered, not even whether the Service exists.
                problems.append(("RefNotPermitted",
                                 f"backend {name}: Service {namespace}/{ref.name} is in another namespace and no "
                                 f"ReferenceGrant in {namespace} allows VocelioServices from "
                                 f"{res.metadata.namespace} to use it"))
            elif found is None:
                problems.append(("BackendNotFound", f"Service {namespace}/{ref.name} has no EndpointSlices"))
            else:
                unresolved = 0
                refused_addresses: list[str] = []
                resolved: dict[int, int | None] = {}  # endpoints of one slice share their ports mapping
                for dep in found:
                    port = resolved.get(id(dep.ports), -1)
                    if port == -1:
                        port = resolved[id(dep.ports)] = _resolve_port(ref, dep)
                    if port is None:
                        unresolved += 1
                        continue
                    if tenancy is not None:
                        # The fence asks whose Service lists the address: a Service of the gateway's
                        # namespace (reached with its grant) may list the gateway's endpoints.
                        refused = tenancy.addresses.refusal(dep.address) or tenancy.fence.refusal(
                            namespace, dep.address, tenancy.addresses.forms)
                        if refused is not None:
                            refused_addresses.append(refused)
                            continue
                    eps.append((dep.address, port, 1, dep.ready, dep.pod))
                if refused_addresses:
                    problems.append(("AddressNotAllowed", f"backend {name}: Service {namespace}/{ref.name}: "
                                     f"{refused_addresses[0]}"))
                if unresolved and not eps:
                    problems.append(("BackendNotFound",
                                     f"port {ref.port!r} not found on Service {namespace}/{ref.name}"))
        eps.sort(key=_BY_ADDRESS)
        # Duplicate addresses (an address in two slices) would double its share: the last one stays.
        unique = {(e[0], e[1]): e for e in eps}
        rows = [{"address": a, "port": p, "weight": w, "ready": r, "name": n} for a, p, w, r, n in unique.values()]
        total += len(rows)
        ready += sum(1 for e in unique.values() if e[3])
        backends.append({"name": name, "weight": spec.weight, "endpoints": rows})
    return backends, problems, ready, total


def _service(res: VocelioServiceResource, prefixes: list[str], backends: list[dict[str, Any]]) -> dict[str, Any]:
    """The service as plain data, in `Service`'s field order with its types (the resource
    model validated every value; `hosts` is left out when empty, as `Service` dumps it)."""
    s = res.spec
    out: dict[str, Any] = {
        "name": res.metadata.name,
        "namespace": res.metadata.namespace,
        "prefixes": prefixes,
    }
    if s.hostnames:
        out["hosts"] = sorted(s.hostnames)
    out.update({
        "rewrite": s.rewrite,
        "route_class": s.route_class,
        "backends": backends,
        "load_balancing": {"policy": s.load_balancing.policy,
                           "panic_threshold_percent": s.load_balancing.panic_threshold_percent},
        "health_check": {
            "enabled": s.health_check.enabled, "path": s.health_check.path,
            "interval_s": s.health_check.interval_seconds, "timeout_s": s.health_check.timeout_seconds,
            "healthy_threshold": s.health_check.healthy_threshold,
            "unhealthy_threshold": s.health_check.unhealthy_threshold,
            "expected_statuses": sorted(set(s.health_check.expected_statuses))},
        "passive_health": {
            "consecutive_failures": s.passive_health.consecutive_failures,
            "base_ejection_s": s.passive_health.base_ejection_seconds,
            "max_ejection_s": s.passive_health.max_ejection_seconds},
        "circuit_breaker": {
            "enabled": s.circuit_breaker.enabled, "consecutive_failures": s.circuit_breaker.consecutive_failures,
            "error_rate_percent": s.circuit_breaker.error_rate_percent,
            "window_s": s.circuit_breaker.window_seconds, "min_requests": s.circuit_breaker.min_requests,
            "open_s": s.circuit_breaker.open_seconds,
            "half_open_max_probes": s.circuit_breaker.half_open_max_probes,
            "probe_timeout_s": s.circuit_breaker.probe_timeout_seconds},
        "timeouts": {"connect_s": s.timeouts.connect_seconds, "request_s": s.timeouts.request_seconds,
                     "idle_s": s.timeouts.idle_seconds, "per_try_s": s.timeouts.per_try_seconds,
                     "retry_floor_s": s.timeouts.retry_floor_seconds,
                     "tunnel_idle_s": s.timeouts.tunnel_idle_seconds},
        "retry": {"attempts": s.retry.attempts, "on_statuses": sorted(set(s.retry.on_statuses)),
                  "methods": sorted({m.upper() for m in s.retry.methods}) if s.retry.methods is not None
                  else list(IDEMPOTENT_METHODS),
                  "budget_percent": s.retry.budget_percent, "min_retries_per_s": s.retry.min_retries_per_second},
        "auth": {"mode": s.auth.mode, "roles": sorted(set(s.auth.roles)), "tenants": sorted(set(s.auth.tenants))},
        "rate_limit": {"requests": s.rate_limit.requests, "window_s": s.rate_limit.window_seconds,
                       "key_by": s.rate_limit.key_by} if s.rate_limit else None,
        "max_body_bytes": s.max_body_bytes,
        "upgrades": list(s.upgrades),
        "upstream_protocol": s.upstream.protocol,
    })
    return out


def _tier(res: RateTierResource) -> RateTier:
    m = res.spec.match
    if m.anonymous:
        match = TierMatch(kind="anonymous")
    elif m.authenticated:
        match = TierMatch(kind="authenticated")
    elif m.api_key:
        match = TierMatch(kind="api-key")
    elif m.attribute is not None:
        match = TierMatch(kind="attribute", attribute=m.attribute.name, value=m.attribute.value)
    else:
        match = TierMatch(kind="route-class", value=m.route_class)
    return RateTier(name=res.metadata.name, requests=res.spec.requests, window_s=res.spec.window_seconds,
                    key_by=res.spec.key_by, match=match, priority=res.spec.priority)


class _Prefix(NamedTuple):
    """One prefix of a resource: as written, canonical (as routed), and its route key."""

    written: str
    canonical: str
    key: str


def _prefixes(res: VocelioServiceResource, policy: PathPolicy) -> list[_Prefix] | str:
    """The resource's prefixes as the router will see them, or why the first invalid one is."""
    out = []
    for written in [res.spec.path_prefix, *res.spec.aliases]:
        try:
            canonical = normalize_path(written, policy).rstrip("/") or "/"
            key = route_key(written, policy)
        except PathError as exc:
            return f"prefix {written} can never match a request path: {exc}"
        if _depth(written) != _depth(canonical):
            # `/team-b/%2e%2e/api` is `/api`: a dot segment in any spelling, which the
            # CRD's rule (on the text as written) cannot see, would move the route.
            return (f"prefix {written} is not a normalised path: it would be routed as {canonical} "
                    "(no empty, . or .. segments, in any spelling)")
        out.append(_Prefix(written, canonical, key))
    return out


def _depth(prefix: str) -> int:
    """The number of segments of a prefix as written (a trailing slash adds none)."""
    text = prefix.rstrip("/")
    return text.count("/") if text else 0


def _spelled(prefix: _Prefix) -> str:
    """The prefix for a message: as routed, and as written when that differs."""
    if (prefix.written.rstrip("/") or "/") == prefix.canonical:
        return prefix.canonical
    return f"{prefix.written} (routed as {prefix.canonical})"


def _rejected(res: VocelioServiceResource, reason: str, message: str) -> Outcome:
    return Outcome("VocelioService", res.id, res.metadata.generation, accepted=False, accepted_reason=reason,
                   accepted_message=message)


def _resolved_reason(problems: list[tuple[str, str]]) -> str:
    found = {reason for reason, _ in problems}
    return next((r for r in _REASONS if r in found), "ResolvedRefs")


def _candidate(res: VocelioServiceResource, endpoints: EndpointIndex, policy: PathPolicy, reserved_keys: set[str],
               tenancy: TenancyPolicy | None
               ) -> Outcome | tuple[list[_Prefix], list[tuple[str, str]], int, int, dict[str, Any]]:
    """One resource judged on its own (no claim registered yet): why it is rejected, or its
    prefixes, backend problems, endpoint counts and service data."""
    prefixes = _prefixes(res, policy)
    if isinstance(prefixes, str):
        return _rejected(res, "InvalidPrefix", prefixes)
    # The gateway answers its own endpoints on every host no service names; a service naming
    # hosts may route those paths on its hosts (docs/host-routing.md).
    reserved = [p for p in prefixes if p.key in reserved_keys] if not res.spec.hostnames else []
    if reserved:
        return _rejected(res, "ReservedPath", f"prefix {_spelled(reserved[0])} is served by the gateway itself")
    canonical = [p.canonical for p in prefixes]
    if len(set(canonical)) != len(canonical):
        return _rejected(res, "Invalid", "pathPrefix and aliases repeat a prefix")
    # Before any claim is registered: a refused claim never routes and never blocks a prefix.
    if tenancy is not None:
        written = [p.written for p in prefixes]
        host_refusal = tenancy.claims.host_refusal(res.metadata.namespace, res.spec.hostnames, written, policy)
        if host_refusal is not None:
            return _rejected(res, "HostNotAllowed", host_refusal)
        not_allowed = tenancy.claims.refusal(res.metadata.namespace, written, policy) \
            if not res.spec.hostnames else None
        if not_allowed is not None:
            return _rejected(res, "PrefixNotAllowed", not_allowed)
    backends, problems, ready, total = _backends(res, endpoints, tenancy)
    return prefixes, problems, ready, total, _service(res, canonical, backends)


def render_config(services: Sequence[VocelioServiceResource], tiers: Sequence[RateTierResource],
                  endpoints: EndpointIndex, policy: PathPolicy = DEFAULT_POLICY,
                  tenancy: TenancyPolicy | None = None) -> RenderResult:
    """Render every resource; `policy` is the path policy prefixes are judged by (the
    strictest by default: see the module docstring). `tenancy` (cluster mode) judges
    prefix and host claims, cross-namespace references and backend addresses
    (docs/multi-tenancy.md); standalone mode passes none."""
    outcomes: dict[str, Outcome] = {}
    reserved_keys = {route_key(p, policy) for p in RESERVED_PATHS}
    # (host, route key) -> (resource id, canonical prefix); host "" is the default host.
    claimed: dict[tuple[str, str], tuple[str, str]] = {}
    rendered: list[dict[str, Any]] = []
    for res in sorted(services, key=_order_key):
        key = f"VocelioService/{res.id}"
        try:
            judged = _candidate(res, endpoints, policy, reserved_keys, tenancy)
        except Exception as exc:
            # One tenant's resource must never stop the render for all: input no check foresaw
            # refuses this resource only. The message names the error's type, never its text
            # (which may quote the resource).
            judged = _rejected(res, "Invalid", f"the resource could not be rendered ({type(exc).__name__}): "
                                               "an operator defect, please report it")
        if isinstance(judged, Outcome):
            outcomes[key] = judged
            continue
        prefixes, problems, ready, total, data = judged
        gen = res.metadata.generation
        hosts = res.spec.hostnames or [""]
        clashes = [(host, p, claimed[host, p.key]) for host in sorted(hosts) for p in prefixes
                   if (host, p.key) in claimed]
        if clashes:
            host, prefix, (owner, theirs) = clashes[0]
            same = "" if theirs == prefix.canonical else \
                f" as {theirs}: prefixes that differ only by letter case or escapes are one route"
            on = f" on host {host}" if host else ""
            outcomes[key] = _rejected(res, "PrefixConflict",
                                      f"prefix {_spelled(prefix)}{on} is already routed to {owner} (older){same}")
            continue
        for host in hosts:
            for p in prefixes:
                claimed[host, p.key] = (res.id, p.canonical)
        rendered.append(data)
        respelled = [_spelled(p) for p in prefixes if (p.written.rstrip("/") or "/") != p.canonical]
        outcomes[key] = Outcome(
            "VocelioService", res.id, gen,
            accepted_message="Resource is valid and routed" + (f" (prefix {respelled[0]})" if respelled else ""),
            resolved=not problems, resolved_reason=_resolved_reason(problems),
            resolved_message="All references resolved" if not problems else "; ".join(m for _, m in problems),
            ready_endpoints=ready, total_endpoints=total)
    rendered.sort(key=lambda s: (s["namespace"], s["name"]))
    tier_list: list[RateTier] = []
    seen_names: dict[str, str] = {}
    for tres in sorted(tiers, key=lambda t: (t.metadata.namespace, t.metadata.name)):
        key = f"RateTier/{tres.id}"
        # Before the name is taken: a tier that is not enforced never shadows the platform's.
        not_allowed = tenancy.tiers.refusal(tres.metadata.namespace, tres.metadata.name) \
            if tenancy is not None else None
        if not_allowed is not None:
            outcomes[key] = Outcome("RateTier", tres.id, tres.metadata.generation, accepted=False,
                                    accepted_reason="TierNotAllowed", accepted_message=not_allowed)
            continue
        if tres.metadata.name in seen_names:
            outcomes[key] = Outcome("RateTier", tres.id, tres.metadata.generation, accepted=False,
                                    accepted_reason="NameConflict",
                                    accepted_message=f"tier name already defined by {seen_names[tres.metadata.name]}")
            continue
        try:
            built_tier = _tier(tres)
        except Exception as exc:
            # As for services: one tier the config model refuses never stops the render.
            outcomes[key] = Outcome("RateTier", tres.id, tres.metadata.generation, accepted=False,
                                    accepted_reason="Invalid",
                                    accepted_message=f"the tier could not be rendered ({type(exc).__name__})")
            continue
        seen_names[tres.metadata.name] = tres.id
        tier_list.append(built_tier)
        outcomes[key] = Outcome("RateTier", tres.id, tres.metadata.generation)
    tier_list.sort(key=lambda t: (-t.priority, t.name))
    text, digest = _serialise(rendered, [t.model_dump() for t in tier_list])
    return RenderResult(text, digest, len(rendered), dict(sorted(outcomes.items())))


def _serialise(services: list[dict[str, Any]], tiers: list[dict[str, Any]]) -> tuple[str, str]:
    """The config's bytes and hash, exactly as `GatewayConfig(...).seal().to_json()` and its
    `hash` (the same pydantic-core serialiser, on plain data in the models' field order):
    the content without the hash is hashed, then the hash goes in after `schema_version`."""
    content = to_json({"schema_version": SCHEMA_VERSION, "services": services, "rate_tiers": tiers})
    digest = hashlib.sha256(content).hexdigest()
    if not content.startswith(_OPENING):
        raise RuntimeError("the config's serialised form no longer opens with its schema version")
    text = b'%s"hash":"%s",%s' % (_OPENING, digest.encode(), content[len(_OPENING):])
    return text.decode() + "\n", digest
