"""The `GatewayConfig` contract: the typed intermediate representation that the
renderer (operator or standalone file provider) produces and every proxy consumes.

Owned by the proxy package; the operator imports it, never the other way round.
`schema/gateway-config.schema.json` is generated from these models
(`vocelio-proxy schema`) and a test fails when it drifts.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from vocelio_contract.hosts import host_problem

SCHEMA_VERSION: Literal[1] = 1

IDEMPOTENT_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PUT", "TRACE")

#: An RFC 9110 token, optionally with a `/version` (the `Upgrade` protocol grammar).
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]+(/[!#$%&'*+.^_`|~0-9a-z-]+)?")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Endpoint(_Model):
    """One upstream address (a pod IP or a static host) serving a backend."""

    address: str = Field(min_length=1, description="IP address or host name.")
    port: Annotated[int, Field(ge=1, le=65535)]
    weight: Annotated[int, Field(ge=0, le=10_000)] = 1
    ready: bool = Field(True, description="Readiness as reported by discovery.")
    name: str | None = Field(None, description="Pod or target name, for status and logs.")

    @property
    def key(self) -> str:
        return f"{self.address}:{self.port}"


class Backend(_Model):
    """A group of endpoints; several backends of one service split traffic by weight (canary)."""

    name: str = Field(min_length=1)
    weight: Annotated[int, Field(ge=0, le=10_000)] = 100
    endpoints: list[Endpoint] = Field(default_factory=list)


class LoadBalancing(_Model):
    policy: Literal["round-robin", "least-request"] = "round-robin"
    panic_threshold_percent: Annotated[int, Field(ge=0, le=100)] = Field(
        50,
        description="When fewer than this share of endpoints is healthy, balance over all of them.",
    )


class HealthCheck(_Model):
    """Active HTTP health check, run by every proxy against every endpoint."""

    enabled: bool = True
    path: str = Field("/health", pattern=r"^/")
    interval_s: Annotated[float, Field(gt=0, le=3600)] = 5.0
    timeout_s: Annotated[float, Field(gt=0, le=60)] = 1.0
    healthy_threshold: Annotated[int, Field(ge=1, le=100)] = 2
    unhealthy_threshold: Annotated[int, Field(ge=1, le=100)] = 3
    expected_statuses: list[Annotated[int, Field(ge=100, le=599)]] = Field(
        default_factory=lambda: [200, 204]
    )


class PassiveHealth(_Model):
    """Outlier ejection from real traffic: consecutive failures eject with exponential back-off."""

    consecutive_failures: Annotated[int, Field(ge=1, le=1000)] = 5
    base_ejection_s: Annotated[float, Field(gt=0, le=3600)] = 10.0
    max_ejection_s: Annotated[float, Field(gt=0, le=86_400)] = 300.0


class CircuitBreaker(_Model):
    enabled: bool = True
    consecutive_failures: Annotated[int, Field(ge=1, le=10_000)] = 5
    error_rate_percent: Annotated[int, Field(ge=1, le=100)] = 50
    window_s: Annotated[float, Field(gt=0, le=3600)] = 10.0
    min_requests: Annotated[int, Field(ge=1, le=100_000)] = 20
    open_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    half_open_max_probes: Annotated[int, Field(ge=1, le=1000)] = 3
    probe_timeout_s: Annotated[float, Field(gt=0, le=3600)] | None = Field(
        None,
        description="A half-open probe that has not finished after this long no longer holds a probe slot "
                    "(its late verdict still counts). Default: the service's request deadline "
                    "(timeouts.request_s) plus its connect timeout.",
    )


class Timeouts(_Model):
    """Upstream time limits. `request_s` is the overall deadline to the response head,
    across every attempt (connects, body upload, retries); `per_try_s` bounds one attempt."""

    connect_s: Annotated[float, Field(gt=0, le=300)] = Field(
        2.0, description="One TCP connect (counted inside the attempt and the deadline).")
    request_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        30.0, description="Overall deadline from routing to the upstream's response head, across all attempts.")
    idle_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        60.0, description="Longest pause while streaming a response body.")
    per_try_s: Annotated[float, Field(gt=0, le=3600)] | None = Field(
        None, description="Time limit of one attempt (connect, upload, response head); unset: the remaining "
                          "deadline. Each attempt gets min(per_try_s, time left).")
    retry_floor_s: Annotated[float, Field(ge=0, le=60)] = Field(
        0.1, description="A retry starts only when at least this much of the deadline is left.")
    tunnel_idle_s: Annotated[float, Field(gt=0, le=86_400)] = Field(
        300.0, description="An upgraded connection (WebSocket) with no bytes either way for this long is closed.")


class Retry(_Model):
    attempts: Annotated[int, Field(ge=1, le=10)] = Field(
        2, description="Total attempts including the first."
    )
    on_statuses: list[Annotated[int, Field(ge=500, le=599)]] = Field(
        default_factory=lambda: [502, 503, 504]
    )
    methods: list[str] = Field(default_factory=lambda: list(IDEMPOTENT_METHODS))
    budget_percent: Annotated[int, Field(ge=0, le=100)] = Field(
        20, description="Retries may add at most this share of requests over the budget window."
    )
    min_retries_per_s: Annotated[float, Field(ge=0, le=10_000)] = 3.0


class AuthPolicy(_Model):
    mode: Literal["public", "jwt", "api-key", "any"] = "public"
    roles: list[str] = Field(default_factory=list, description="Any of these roles/scopes is required.")
    tenants: list[str] = Field(default_factory=list, description="Only these tenants (empty: all).")


KeyBy = Literal["ip", "user", "api-key", "tenant"]
#: The protocol spoken to a service's endpoints.
UpstreamProtocol = Literal["http/1.1", "h2c"]


class ServiceRateLimit(_Model):
    requests: Annotated[int, Field(ge=1)]
    window_s: Annotated[int, Field(ge=1, le=86_400)]
    key_by: KeyBy = "ip"


def upgrade_tokens(value: list[str]) -> list[str]:
    """Upgrade protocol tokens lower-cased, stripped and without repeats; ValueError for a
    token that is not one, or for h2c. Shared by `Service` and the operator's resource model."""
    out: list[str] = []
    for token in value:
        name = token.strip().lower()
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"upgrade {token!r} is not a protocol token")
        if name.split("/", 1)[0] == "h2c":
            raise ValueError("h2c upgrades are never forwarded (HTTP/2 over cleartext is not an upgrade "
                             "this gateway relays)")
        if name not in out:
            out.append(name)
    return out


class Service(_Model):
    """One routed backend service (rendered from a VocelioService)."""

    name: str = Field(min_length=1, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    namespace: str = "default"
    prefixes: list[str] = Field(min_length=1, description="Primary prefix first, then aliases.")
    # Omitted from the JSON when empty: a config that names no host is byte-identical to
    # one written before host routing, so proxies of either version read it.
    hosts: list[str] = Field(
        default_factory=list, max_length=16, exclude_if=lambda hosts: not hosts,
        description="Host names (exact, or `*.` wildcards) this service is routed on; empty: every host "
                    "that no service names (docs/host-routing.md).")
    rewrite: str | None = Field(None, description="Replace the matched prefix with this path.")
    route_class: str | None = Field(None, description="A label such as 'webhooks' that tiers can match.")
    backends: list[Backend] = Field(default_factory=list)
    load_balancing: LoadBalancing = LoadBalancing()
    health_check: HealthCheck = HealthCheck()
    passive_health: PassiveHealth = PassiveHealth()
    circuit_breaker: CircuitBreaker = CircuitBreaker()
    timeouts: Timeouts = Timeouts()
    retry: Retry = Retry()
    auth: AuthPolicy = AuthPolicy()
    rate_limit: ServiceRateLimit | None = None
    max_body_bytes: Annotated[int, Field(ge=0)] | None = None
    upgrades: list[str] = Field(
        default_factory=lambda: ["websocket"],
        description="Upgrade protocols (RFC 9110 `Upgrade` tokens, case-insensitive) forwarded to this service; "
                    "any other upgrade request is served as a plain request. `h2c` is never forwarded.",
    )
    upstream_protocol: UpstreamProtocol = Field(
        "http/1.1",
        description="How the gateway talks to this service's endpoints: HTTP/1.1, or HTTP/2 over cleartext "
                    "with prior knowledge (`h2c`: gRPC, trailers passed through).",
    )

    @property
    def id(self) -> str:
        return f"{self.namespace}/{self.name}"

    @field_validator("upgrades")
    @classmethod
    def _upgrade_tokens(cls, value: list[str]) -> list[str]:
        return upgrade_tokens(value)

    @field_validator("hosts")
    @classmethod
    def _host_names(cls, value: list[str]) -> list[str]:
        for host in value:
            problem = host_problem(host)
            if problem is not None:
                raise ValueError(problem)
        if len(set(value)) != len(value):
            raise ValueError("hosts repeat a host name")
        return value

    @field_validator("prefixes")
    @classmethod
    def _prefixes_are_paths(cls, value: list[str]) -> list[str]:
        for prefix in value:
            if not prefix.startswith("/") or "//" in prefix or "/../" in f"{prefix}/":
                raise ValueError(f"prefix {prefix!r} must be an absolute, normalised path")
        return value


class TierMatch(_Model):
    """Exactly one kind of match decides which callers a tier applies to."""

    kind: Literal["anonymous", "authenticated", "api-key", "attribute", "route-class"]
    attribute: str | None = None
    value: str | None = None

    @model_validator(mode="after")
    def _attribute_needs_value(self) -> TierMatch:
        if self.kind == "attribute" and not (self.attribute and self.value):
            raise ValueError("an attribute match needs both attribute and value")
        if self.kind == "route-class" and not self.value:
            raise ValueError("a route-class match needs a value")
        return self


class RateTier(_Model):
    name: str = Field(min_length=1)
    requests: Annotated[int, Field(ge=1)]
    window_s: Annotated[int, Field(ge=1, le=86_400)]
    key_by: KeyBy
    match: TierMatch
    priority: int = 0


class GatewayConfig(_Model):
    """The whole dynamic configuration of the proxy fleet."""

    schema_version: Literal[1] = SCHEMA_VERSION
    hash: str = Field("", description="sha256 of the canonical content; set by `seal`.")
    services: list[Service] = Field(default_factory=list)
    rate_tiers: list[RateTier] = Field(default_factory=list)

    @property
    def version(self) -> str:
        return self.hash[:12] if self.hash else "unsealed"

    def content_hash(self) -> str:
        # Field order is fixed by the models and the renderer sorts every list, so
        # pydantic's (Rust) serialiser is already canonical.
        return hashlib.sha256(self.model_dump_json(exclude={"hash"}).encode()).hexdigest()

    def seal(self) -> GatewayConfig:
        return self.model_copy(update={"hash": self.content_hash()})

    def to_json(self) -> str:
        """Deterministic serialisation: the bytes written to a ConfigMap or file."""
        return self.model_dump_json() + "\n"

    @model_validator(mode="after")
    def _unique(self) -> GatewayConfig:
        seen: dict[tuple[str, str], str] = {}
        for svc in self.services:
            for host in svc.hosts or [""]:
                for prefix in svc.prefixes:
                    if (host, prefix) in seen:
                        on = f" on host {host}" if host else ""
                        raise ValueError(f"prefix {prefix}{on} claimed by {seen[host, prefix]} and {svc.id}")
                    seen[host, prefix] = svc.id
        if self.hash and self.hash != self.content_hash():
            raise ValueError("hash does not match content (corrupt or hand-edited config)")
        return self


class ConfigError(ValueError):
    """A config document that cannot replace the running one."""


def parse_config(raw: str | bytes) -> GatewayConfig:
    """Parse and validate a serialised config; raises ConfigError with a readable reason."""
    try:
        return GatewayConfig.model_validate_json(raw)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def json_schema() -> str:
    schema = GatewayConfig.model_json_schema()
    schema["$id"] = "https://vocelio.dev/schemas/gateway-config.v1.json"
    return json.dumps(schema, sort_keys=True, indent=2) + "\n"
