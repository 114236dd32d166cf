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
    redis_url: str | None = None
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
