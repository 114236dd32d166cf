"""Typed models of the custom resources (`VocelioService`, `RateTier`) and of
discovered endpoints: the renderer's input. They mirror `crds/*.yaml` (the API
server enforces the schema; these models re-check it for standalone mode and
give field paths in errors). Pure; used by the renderer, the operator and the
file provider."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from typing_extensions import TypeIs

from vocelio_contract.config import upgrade_tokens
from vocelio_contract.hosts import host_problem

GROUP = "gateway.vocelio.ai"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

_ASCII_DIGITS = re.compile(r"[0-9]{1,5}")
#: A Service port name (a DNS label, as the API server validates Service and EndpointSlice port names).
_PORT_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def _shown(text: str) -> str:
    """Tenant text for a message: bounded and printable."""
    return repr("".join(c if c.isprintable() else "?" for c in text[:64]))


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class ServiceRef(_Spec):
    name: str = Field(min_length=1)
    namespace: str | None = None
    #: A port number, or the name of a Service port. A string of ASCII digits is a number;
    #: any other string is a name, compared exactly (never read as a number: `int()` also
    #: reads "٣" and fails on "²", which would stop the render of every tenant).
    port: int | str

    @field_validator("port")
    @classmethod
    def _port(cls, port: int | str) -> int | str:
        if isinstance(port, str) and _ASCII_DIGITS.fullmatch(port):
            port = int(port)
        if isinstance(port, int) and not 1 <= port <= 65535:
            raise ValueError(f"port {port} is not a port number (1-65535)")
        if isinstance(port, str) and not _PORT_NAME.fullmatch(port):
            raise ValueError(f"port {_shown(port)} is neither a port number nor a Service port name "
                             "(lower-case letters, digits and '-', at most 63)")
        return port


class StaticEndpoint(_Spec):
    address: str = Field(min_length=1)
    port: Annotated[int, Field(ge=1, le=65535)]
    weight: Annotated[int, Field(ge=0, le=10_000)] = 1


class BackendSpec(_Spec):
    name: str | None = None
    weight: Annotated[int, Field(ge=0, le=10_000)] = 100
    service_ref: ServiceRef | None = Field(None, alias="serviceRef")
    static_endpoints: list[StaticEndpoint] | None = Field(None, alias="staticEndpoints")

    @model_validator(mode="after")
    def _exactly_one_target(self) -> BackendSpec:
        if (self.service_ref is None) == (self.static_endpoints is None):
            raise ValueError("a backend needs exactly one of serviceRef or staticEndpoints")
        return self


class LoadBalancingSpec(_Spec):
    policy: Literal["round-robin", "least-request"] = "round-robin"
    panic_threshold_percent: Annotated[int, Field(ge=0, le=100)] = Field(50, alias="panicThresholdPercent")


class HealthCheckSpec(_Spec):
    enabled: bool = True
    path: str = Field("/health", pattern=r"^/")
    interval_seconds: Annotated[float, Field(gt=0, le=3600)] = Field(5.0, alias="intervalSeconds")
    timeout_seconds: Annotated[float, Field(gt=0, le=60)] = Field(1.0, alias="timeoutSeconds")
    healthy_threshold: Annotated[int, Field(ge=1, le=100)] = Field(2, alias="healthyThreshold")
    unhealthy_threshold: Annotated[int, Field(ge=1, le=100)] = Field(3, alias="unhealthyThreshold")
    expected_statuses: list[Annotated[int, Field(ge=100, le=599)]] = Field(
        default_factory=lambda: [200, 204], alias="expectedStatuses")

    @model_validator(mode="after")
    def _timeout_within_interval(self) -> HealthCheckSpec:
        if self.timeout_seconds > self.interval_seconds:
            raise ValueError("timeoutSeconds must not exceed intervalSeconds")
        return self


class PassiveHealthSpec(_Spec):
    consecutive_failures: Annotated[int, Field(ge=1, le=1000)] = Field(5, alias="consecutiveFailures")
    base_ejection_seconds: Annotated[float, Field(gt=0, le=3600)] = Field(10.0, alias="baseEjectionSeconds")
    max_ejection_seconds: Annotated[float, Field(gt=0, le=86_400)] = Field(300.0, alias="maxEjectionSeconds")


class CircuitBreakerSpec(_Spec):
    enabled: bool = True
    consecutive_failures: Annotated[int, Field(ge=1, le=10_000)] = Field(5, alias="consecutiveFailures")
    error_rate_percent: Annotated[int, Field(ge=1, le=100)] = Field(50, alias="errorRatePercent")
    window_seconds: Annotated[float, Field(gt=0, le=3600)] = Field(10.0, alias="windowSeconds")
    min_requests: Annotated[int, Field(ge=1, le=100_000)] = Field(20, alias="minRequests")
    open_seconds: Annotated[float, Field(gt=0, le=3600)] = Field(30.0, alias="openSeconds")
    half_open_max_probes: Annotated[int, Field(ge=1, le=1000)] = Field(3, alias="halfOpenMaxProbes")
    probe_timeout_seconds: Annotated[float, Field(gt=0, le=3600)] | None = Field(None, alias="probeTimeoutSeconds")

    @model_validator(mode="after")
    def _probes_within_threshold(self) -> CircuitBreakerSpec:
        if self.half_open_max_probes > self.consecutive_failures:
            raise ValueError("halfOpenMaxProbes must not exceed consecutiveFailures")
        return self


class TimeoutsSpec(_Spec):
    connect_seconds: Annotated[float, Field(gt=0, le=300)] = Field(2.0, alias="connectSeconds")
    request_seconds: Annotated[float, Field(gt=0, le=3600)] = Field(30.0, alias="requestSeconds")
    idle_seconds: Annotated[float, Field(gt=0, le=3600)] = Field(60.0, alias="idleSeconds")
    per_try_seconds: Annotated[float, Field(gt=0, le=3600)] | None = Field(None, alias="perTrySeconds")
    retry_floor_seconds: Annotated[float, Field(ge=0, le=60)] = Field(0.1, alias="retryFloorSeconds")
    tunnel_idle_seconds: Annotated[float, Field(gt=0, le=86_400)] = Field(300.0, alias="tunnelIdleSeconds")


class RetrySpec(_Spec):
    attempts: Annotated[int, Field(ge=1, le=10)] = 2
    on_statuses: list[Annotated[int, Field(ge=500, le=599)]] = Field(
        default_factory=lambda: [502, 503, 504], alias="onStatuses")
    methods: list[str] | None = None
    budget_percent: Annotated[int, Field(ge=0, le=100)] = Field(20, alias="budgetPercent")
    min_retries_per_second: Annotated[float, Field(ge=0, le=10_000)] = Field(3.0, alias="minRetriesPerSecond")


class AuthSpec(_Spec):
    mode: Literal["public", "jwt", "api-key", "any"] = "public"
    roles: list[str] = Field(default_factory=list)
    tenants: list[str] = Field(default_factory=list)


class RateLimitSpec(_Spec):
    requests: Annotated[int, Field(ge=1)]
    window_seconds: Annotated[int, Field(ge=1, le=86_400)] = Field(alias="windowSeconds")
    key_by: Literal["ip", "user", "api-key", "tenant"] = Field("ip", alias="keyBy")


class UpstreamSpec(_Spec):
    protocol: Literal["http/1.1", "h2c"] = "http/1.1"


class VocelioServiceSpec(_Spec):
    path_prefix: str = Field(alias="pathPrefix", pattern=r"^/")
    aliases: list[Annotated[str, Field(pattern=r"^/")]] = Field(default_factory=list)
    rewrite: str | None = Field(None, pattern=r"^/")
    route_class: str | None = Field(None, alias="routeClass")
    backends: list[BackendSpec] = Field(min_length=1)
    load_balancing: LoadBalancingSpec = Field(LoadBalancingSpec(), alias="loadBalancing")
    health_check: HealthCheckSpec = Field(HealthCheckSpec(), alias="healthCheck")
    passive_health: PassiveHealthSpec = Field(PassiveHealthSpec(), alias="passiveHealth")
    circuit_breaker: CircuitBreakerSpec = Field(CircuitBreakerSpec(), alias="circuitBreaker")
    timeouts: TimeoutsSpec = TimeoutsSpec()
    retry: RetrySpec = RetrySpec()
    auth: AuthSpec = AuthSpec()
    rate_limit: RateLimitSpec | None = Field(None, alias="rateLimit")
    max_body_bytes: Annotated[int, Field(ge=0)] | None = Field(None, alias="maxBodyBytes")
    upgrades: list[str] = Field(default_factory=lambda: ["websocket"], max_length=16)
    upstream: UpstreamSpec = UpstreamSpec()
    hostnames: list[str] = Field(default_factory=list, max_length=16)

    @field_validator("hostnames")
    @classmethod
    def _hostnames(cls, hosts: list[str]) -> list[str]:
        # The CRD's pattern and CEL rules, for offline validation; the renderer trusts them.
        for host in hosts:
            problem = host_problem(host)
            if problem is not None:
                raise ValueError(problem)
        if len(set(hosts)) != len(hosts):
            raise ValueError("hostnames must not repeat a name")
        return hosts

    @field_validator("upgrades")
    @classmethod
    def _upgrades(cls, upgrades: list[str]) -> list[str]:
        # Normalised here, at the boundary, once: the renderer copies them into the config unchecked.
        return upgrade_tokens(upgrades)

    @model_validator(mode="after")
    def _cross_field_rules(self) -> VocelioServiceSpec:
        # The CRD's CEL rules, with the API server's messages, for offline validation.
        if all(b.weight == 0 for b in self.backends):
            raise ValueError("backend weights must not all be zero")
        if self.path_prefix in self.aliases:
            raise ValueError("an alias must differ from pathPrefix")
        if not _normalised(self.path_prefix):
            raise ValueError("pathPrefix must be a normalised absolute path (no //, . or .. segments)")
        if not all(_normalised(alias) for alias in self.aliases):
            raise ValueError("an alias must be a normalised absolute path (no //, . or .. segments)")
        return self


def _normalised(prefix: str) -> bool:
    """The CRD's CEL rule for a prefix (escaped dot segments are the renderer's to refuse)."""
    return not ("//" in prefix or "/../" in prefix or prefix.endswith(("/..", "/.")) or "/./" in prefix)


class AttributeMatch(_Spec):
    name: str = Field(min_length=1)
    value: str = Field(min_length=1)


class TierMatchSpec(_Spec):
    anonymous: bool | None = None
    authenticated: bool | None = None
    api_key: bool | None = Field(None, alias="apiKey")
    attribute: AttributeMatch | None = None
    route_class: str | None = Field(None, alias="routeClass")

    @model_validator(mode="after")
    def _exactly_one(self) -> TierMatchSpec:
        chosen = [v for v in (self.anonymous, self.authenticated, self.api_key, self.attribute, self.route_class)
                  if v not in (None, False)]
        if len(chosen) != 1:
            raise ValueError("match needs exactly one of anonymous, authenticated, apiKey, attribute, routeClass")
        return self


class RateTierSpec(_Spec):
    requests: Annotated[int, Field(ge=1)]
    window_seconds: Annotated[int, Field(ge=1, le=86_400)] = Field(alias="windowSeconds")
    algorithm: Literal["sliding-window"] = "sliding-window"
    key_by: Literal["ip", "user", "api-key", "tenant"] = Field(alias="keyBy")
    match: TierMatchSpec
    priority: int = 0


class Metadata(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)
    name: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    namespace: str = "default"
    generation: int = 1
    uid: str = ""
    creation_timestamp: str = Field("", alias="creationTimestamp")


SpecT = TypeVar("SpecT", "VocelioServiceSpec", "RateTierSpec")


@dataclass(frozen=True)
class Resource(Generic[SpecT]):
    """One parsed custom resource: its metadata and typed spec."""

    metadata: Metadata
    spec: SpecT

    @property
    def id(self) -> str:
        return f"{self.metadata.namespace}/{self.metadata.name}"


VocelioServiceResource = Resource[VocelioServiceSpec]
RateTierResource = Resource[RateTierSpec]


def is_service(res: VocelioServiceResource | RateTierResource) -> TypeIs[VocelioServiceResource]:
    return isinstance(res.spec, VocelioServiceSpec)


@dataclass(frozen=True)
class DiscoveredEndpoint:
    """One address of an EndpointSlice (or a static target)."""

    address: str
    ready: bool
    pod: str | None = None
    ports: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class FieldProblem:
    """A validation problem with the field it concerns, for status and CLI output."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


def problems_of(exc: ValidationError, root: str = "spec") -> list[FieldProblem]:
    out = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        out.append(FieldProblem(f"{root}.{loc}" if loc else root, msg))
    return out


class ResourceError(ValueError):
    """A manifest that does not parse; `problems` names each field."""

    def __init__(self, problems: list[FieldProblem]) -> None:
        super().__init__("; ".join(map(str, problems)))
        self.problems = problems


def _invalid_text(doc: object) -> FieldProblem | None:
    """The first string (key or value) of a manifest that is not valid Unicode text: a lone
    surrogate, which a `\\ud800` escape in YAML or JSON produces (the API server never sends
    one; a standalone file can). The models accept it as a `str`, but the config cannot be
    serialised with it: found here, at the boundary, it refuses its own resource only (the
    renderer serialises without validating again). The message never repeats the text."""
    stack: list[tuple[str, object]] = [("", doc)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            if not value.isascii():
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError:
                    return FieldProblem(path, "is not valid Unicode text (it holds a lone surrogate escape)")
        elif isinstance(value, dict):
            for key, item in value.items():
                name = _shown(key)[1:-1] if isinstance(key, str) else str(key)
                if isinstance(key, str) and not key.isascii():
                    try:
                        key.encode("utf-8")
                    except UnicodeEncodeError:
                        return FieldProblem(f"{path}.{name}" if path else name,
                                            "this field name is not valid Unicode text")
                stack.append((f"{path}.{name}" if path else name, item))
        elif isinstance(value, list):
            stack.extend((f"{path}.{index}", item) for index, item in enumerate(value))
    return None


def parse_resource(doc: dict[str, Any]) -> VocelioServiceResource | RateTierResource:
    """Parse one manifest; raises ResourceError listing every field problem."""
    for part in ("metadata", "spec"):
        problem = _invalid_text({part: doc.get(part)})
        if problem is not None:
            raise ResourceError([problem])
    kind = doc.get("kind")
    if doc.get("apiVersion") != API_VERSION:
        raise ResourceError([FieldProblem("apiVersion", f"expected {API_VERSION}, got {doc.get('apiVersion')!r}")])
    try:
        metadata = Metadata.model_validate(doc.get("metadata") or {})
    except ValidationError as exc:
        raise ResourceError(problems_of(exc, "metadata")) from exc
    try:
        if kind == "VocelioService":
            return Resource(metadata, VocelioServiceSpec.model_validate(doc.get("spec") or {}))
        if kind == "RateTier":
            return Resource(metadata, RateTierSpec.model_validate(doc.get("spec") or {}))
    except ValidationError as exc:
        raise ResourceError(problems_of(exc)) from exc
    raise ResourceError([FieldProblem("kind", f"unsupported kind {kind!r}")])
