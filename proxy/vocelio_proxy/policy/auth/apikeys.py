"""API keys: minted as `voc_<id>_<secret>` with 256 bits of secret, stored only
as SHA-256 hashes with their tenant, tier, roles, expiry and disabled flag, and
checked in constant time. Pure; the edge policy authenticates with a store
loaded from a mounted Secret (cluster) or a local file (standalone)."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from vocelio_proxy.policy.auth.identity import AuthError, Identity

_KEY = re.compile(r"^voc_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
_DUMMY_HASH = hashlib.sha256(b"vocelio-no-such-key").hexdigest()


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


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def mint_key(**metadata: Any) -> tuple[str, ApiKeyRecord]:
    """A new key (shown once) and the record that stores only its hash."""
    key_id = secrets.token_hex(6)
    key = f"voc_{key_id}_{secrets.token_urlsafe(32)}"
    return key, ApiKeyRecord(id=key_id, hash=hash_key(key), **metadata)


def key_hint(key: str) -> str:
    """What may be logged about a presented key: its id, never the secret."""
    match = _KEY.match(key)
    return f"voc_{match.group(1)}_…" if match else "malformed"


class ApiKeyStore:
    def __init__(self, records: list[ApiKeyRecord]) -> None:
        self._by_id = {r.id: r for r in records}

    def __len__(self) -> int:
        return len(self._by_id)

    def authenticate(self, presented: str, ip: str, now: dt.datetime) -> Identity:
        match = _KEY.match(presented)
        if match is None:
            raise AuthError("api_key_malformed", "The API key is malformed")
        record = self._by_id.get(match.group(1))
        digest = hash_key(presented)
        # Compare even for unknown ids so timing does not reveal which ids exist.
        ok = hmac.compare_digest(digest, record.hash if record else _DUMMY_HASH)
        if record is None or not ok:
            raise AuthError("api_key_invalid", "The API key is not valid")
        if record.disabled:
            raise AuthError("api_key_disabled", "The API key is disabled")
        if record.expires_at is not None and record.expires_at <= now:
            raise AuthError("api_key_expired", "The API key has expired")
        attributes = {"tier": record.tier} if record.tier else {}
        return Identity(method="api-key", ip=ip, user=f"apikey:{record.id}", tenant=record.tenant,
                        roles=frozenset(record.roles), tier=record.tier, key_id=record.id, attributes=attributes)


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


def load_store(path: Path) -> ApiKeyStore:
    return ApiKeyStore(load_records(path.read_bytes()))


SECRET_LABEL = "gateway.vocelio.ai/api-key"


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
