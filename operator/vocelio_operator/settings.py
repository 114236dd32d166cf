"""Operator settings (env `VOCELIO_OPERATOR_*` and CLI flags): what to watch,
where to write the config, and timing. Read once by the CLI and handed to the
reconciler through kopf's memo."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from vocelio_contract.logs import LogFormat, LogLevel
from vocelio_contract.sharding import PART_BYTES
from vocelio_operator.translation.tenancy.policy import TenancySettings


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VOCELIO_OPERATOR_", extra="forbid")

    namespaces: list[str] = Field(default_factory=list, description="Watched namespaces; empty watches all.")
    config_namespace: str = Field("vocelio-system", description="Namespace of the config ConfigMaps.")
    config_name: str = Field("vocelio-gateway-config", description="Name of the (first) config ConfigMap.")
    api_keys_secret: str = Field("vocelio-gateway-api-keys", description="Secret with API-key hashes for proxies.")
    api_key_label: str = Field("gateway.vocelio.ai/api-key", description="Label that marks API-key Secrets.")
    coalesce_s: Annotated[float, Field(ge=0, le=10)] = Field(
        0.05, description="Wait this long after an event so a burst renders once.")
    shard_bytes: Annotated[int, Field(ge=1024, le=1_000_000)] = PART_BYTES
    metrics_port: Annotated[int, Field(ge=0, le=65535)] = 8081
    liveness_port: Annotated[int, Field(ge=0, le=65535)] = 8082
    peering: str = Field("vocelio-gateway", description="kopf peering name; replicas with one name elect one.")
    priority: int = Field(0, description="kopf peering priority of this replica.")
    peering_lifetime_s: Annotated[float, Field(ge=1, le=3600)] = Field(
        60, description="How long this replica's peering record lives without a refresh: a replica that "
                        "stops answering is replaced after this long.")
    index_sweep_s: Annotated[float, Field(ge=0, le=86400)] = Field(
        300, description="While active, check kopf's indexes against a fresh listing this often (and on every "
                         "activation): an object deleted while a watch was down is rendered no longer than this "
                         "after the watch's re-list. 0 checks on activation only.")
    log_level: LogLevel = Field(
        "INFO", description="Log level, any letter case (debug, info, warning, error).")
    log_format: LogFormat = Field(
        "json", description="json: one JSON object per line; text: human-readable lines (development).")

    tenancy: TenancySettings = Field(
        default_factory=lambda: TenancySettings(),
        description="Tenant isolation (docs/multi-tenancy.md): static endpoints, prefix claims, API-key "
                    "namespaces and allowances. From the chart's `tenancy` values as JSON.")
