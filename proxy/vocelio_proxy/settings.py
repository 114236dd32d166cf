"""Proxy static settings: everything that is not dynamic config. Read from
`VOCELIO_*` environment variables, an optional settings file (YAML/JSON) and CLI
flags (highest precedence). Consumed by the application factory; the Helm chart
renders these as env."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class CorsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    allow_origins: list[str] = Field(default_factory=list, description="Exact origins, or '*'.")
    allow_methods: list[str] = Field(default_factory=lambda: ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
    allow_headers: list[str] = Field(
        default_factory=lambda: ["Authorization", "Content-Type", "X-API-Key", "X-Request-ID"])
    expose_headers: list[str] = Field(default_factory=lambda: [
        "X-Request-ID", "X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset", "Retry-After"])
    allow_credentials: bool = False
    max_age_s: int = 600


JwtAlgorithm = Literal["HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "ES256", "ES384"]


class JwtIssuer(BaseModel):
    """One accepted token issuer and how its signatures are checked."""

    model_config = ConfigDict(extra="forbid")
    issuer: str = Field(description="Expected `iss` claim.")
    audiences: list[str] = Field(default_factory=list, description="Accepted `aud` values (empty: not checked).")
    algorithms: list[JwtAlgorithm] = Field(default=["RS256"], description="Accepted `alg` values.")
    secret: str | None = Field(None, description="HMAC secret for HS* algorithms.", repr=False)
    public_keys: dict[str, str] = Field(default_factory=dict, description="kid -> PEM public key.", repr=False)
    jwks_url: str | None = Field(None, description="JWKS document with the issuer's public keys.")


class ClaimNames(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: str = "sub"
    tenant: str = "org_id"
    roles: str = "roles"
    scope: str = "scope"
    tier: str = "tier"


class AuthSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    issuers: list[JwtIssuer] = Field(default_factory=list)
    claims: ClaimNames = ClaimNames()
    leeway_s: Annotated[float, Field(ge=0, le=300)] = 30.0
    max_token_bytes: Annotated[int, Field(ge=256, le=65536)] = 8192
    jwks_refresh_min_interval_s: Annotated[float, Field(ge=1, le=3600)] = 30.0


class RateLimitSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    redis_timeout_s: Annotated[float, Field(gt=0, le=5)] = 0.1
    fail_mode: Literal["open", "closed"] = Field(
        "open", description="open: fall back to a per-process limiter; closed: answer 503.")
    retry_redis_after_s: Annotated[float, Field(gt=0, le=60)] = 1.0
    key_prefix: str = "vrl"


class LimitSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_body_bytes: Annotated[int, Field(ge=0)] = 10 * 1024 * 1024
    max_header_bytes: Annotated[int, Field(ge=1024, le=1 << 20)] = 16384
    max_headers: Annotated[int, Field(ge=10, le=1000)] = 100
    max_url_bytes: Annotated[int, Field(ge=256, le=1 << 16)] = 8192
    # -- client connections (server.HttpServer; docs/security/wire.md) --
    client_body_timeout_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        30.0, description="A request body must make progress within this time (else 408 and close).")
    client_send_timeout_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        60.0, description="A client that takes none of its answers for this long is disconnected.")
    max_client_connections: Annotated[int, Field(ge=1, le=1_000_000)] = Field(
        10000, description="Open client connections; beyond it new ones get a 503 and a close.")
    max_pipelined_requests: Annotated[int, Field(ge=1, le=1024)] = Field(
        16, description="Parsed but unanswered requests per connection before reading pauses.")
    max_connection_buffer_bytes: Annotated[int, Field(ge=16384, le=64 << 20)] = Field(
        256 * 1024, description="Unsent answer bytes plus queued requests per connection before reading pauses.")


class CompressionSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    min_bytes: Annotated[int, Field(ge=0)] = 1024
    types: list[str] = Field(default_factory=lambda: [
        "application/json", "text/", "application/javascript", "application/xml", "image/svg+xml"])


class ReadinessPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    require_config: bool = True
    require_first_health_round: bool = True
    unready_when_all_breakers_open: bool = Field(
        False,
        description="Only when every service's breaker is open; one failing backend never "
                    "takes the fleet out of rotation.",
    )


class ProxySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VOCELIO_", env_nested_delimiter="__", extra="forbid")

    host: str = "0.0.0.0"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    config_path: Path | None = Field(None, description="GatewayConfig JSON file (a mounted ConfigMap key).")
    config_poll_s: Annotated[float, Field(gt=0, le=60)] = 0.5
    resources_dir: Path | None = Field(None, description="Standalone mode: a folder of resource YAML files.")
    api_keys_path: Path | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    access_log: bool = True
    trusted_proxies: Annotated[int, Field(ge=0, le=10)] = 0
    trusted_hosts: list[str] = Field(default_factory=list, description="Allowed Host values; empty allows any.")
    cors: CorsSettings = CorsSettings()
    readiness: ReadinessPolicy = ReadinessPolicy()
    drain_timeout_s: Annotated[float, Field(ge=0, le=600)] = 20.0
    shutdown_delay_s: Annotated[float, Field(ge=0, le=60)] = 0.0
    upstream_idle_timeout_s: Annotated[float, Field(gt=0)] = 60.0
    client_header_timeout_s: Annotated[float, Field(gt=0, le=300)] = Field(
        10.0, description="A client must send a whole request head within this time (else 408).")
    client_idle_timeout_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        75.0, description="Idle keep-alive client connections are closed after this time.")
    redis_url: str | None = Field(None, description="Redis for global rate limits; unset: per-process limiter.")
    auth: AuthSettings = AuthSettings()
    rate_limit: RateLimitSettings = RateLimitSettings()
    limits: LimitSettings = LimitSettings()
    compression: CompressionSettings = CompressionSettings()
    environment: str = "development"


def load_settings(settings_file: Path | None = None, **overrides: Any) -> ProxySettings:
    """Settings from env, then the file, then explicit overrides (CLI flags)."""
    data: dict[str, Any] = {}
    if settings_file is not None:
        data = yaml.safe_load(settings_file.read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{settings_file}: settings must be a mapping")
    data.update({k: v for k, v in overrides.items() if v is not None})
    return ProxySettings(**data)
