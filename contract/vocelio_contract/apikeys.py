"""The API-key record format both sides share: keys are minted as `voc_<id>_<secret>`
with 256 bits of secret and stored only as SHA-256 hashes with their tenant, tier,
roles, expiry and disabled flag, as a Kubernetes Secret (`secret_manifest`, read
back by the operator's cluster index with `record_from_secret_data`) or a local
YAML/JSON file (`load_records`). Pure; the proxy's `policy.auth.apikeys` checks
presented keys against these records, `vocelio-gateway mint-key` writes them."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

KEY_PATTERN = re.compile(r"^voc_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")


class ApiKeyRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field(pattern=r"^[0-9a-f]{12}$")
    hash: str = Field(pattern=r"^[0-9a-f]{64}$", repr=False)
    name: str = ""
    tenant: str | None = None
    tier: str | None = None
    roles: list[str] = Field(default_factory=list)
    expires_at: dt.datetime | None = None
    disabled: bool = False

    @field_validator("expires_at")
    @classmethod
    def _aware(cls, value: dt.datetime | None) -> dt.datetime | None:
        # A time without an offset is UTC: the proxy compares expiry with an aware clock, and a
        # naive time there would fail every request with the key instead of expiring it.
        return value.replace(tzinfo=dt.UTC) if value is not None and value.tzinfo is None else value


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def mint_key(**metadata: Any) -> tuple[str, ApiKeyRecord]:
    """A new key (shown once) and the record that stores only its hash."""
    key_id = secrets.token_hex(6)
    key = f"voc_{key_id}_{secrets.token_urlsafe(32)}"
    return key, ApiKeyRecord(id=key_id, hash=hash_key(key), **metadata)


def key_hint(key: str) -> str:
    """What may be logged about a presented key: its id, never the secret."""
    match = KEY_PATTERN.match(key)
    return f"voc_{match.group(1)}_…" if match else "malformed"


def load_records(raw: bytes | str) -> list[ApiKeyRecord]:
    data = yaml.safe_load(raw) or []
    if isinstance(data, dict):
        data = data.get("keys", [])
    if not isinstance(data, list):
        raise ValueError("API key file must be a list of records")
    try:
        return [ApiKeyRecord.model_validate(item) for item in data]
    except ValidationError as exc:
        raise ValueError(f"invalid API key record: {exc.errors()[0]['msg']}") from exc


SECRET_LABEL = "gateway.vocelio.ai/api-key"  # noqa: S105 - a label name, no secret


def secret_manifest(record: ApiKeyRecord, namespace: str) -> dict[str, Any]:
    """The Kubernetes Secret that registers a key: hash and metadata only."""
    data = {"id": record.id, "hash": record.hash, "name": record.name, "tenant": record.tenant or "",
            "tier": record.tier or "", "roles": ",".join(record.roles),
            "expiresAt": record.expires_at.isoformat() if record.expires_at else "",
            "disabled": "true" if record.disabled else "false"}
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": f"vocelio-api-key-{record.id}", "namespace": namespace,
                         "labels": {SECRET_LABEL: "true"}},
            "stringData": data}


def record_from_secret_data(data: dict[str, str]) -> ApiKeyRecord:
    """Inverse of `secret_manifest` (values already base64-decoded)."""
    expires = data.get("expiresAt") or None
    return ApiKeyRecord(id=data["id"], hash=data["hash"], name=data.get("name", ""),
                        tenant=data.get("tenant") or None, tier=data.get("tier") or None,
                        roles=[r for r in (data.get("roles") or "").split(",") if r],
                        expires_at=dt.datetime.fromisoformat(expires) if expires else None,
                        disabled=data.get("disabled", "false").lower() == "true")
