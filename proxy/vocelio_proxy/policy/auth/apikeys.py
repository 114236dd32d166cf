"""API-key authentication: checks a presented key against the stored records (the
format is `vocelio_contract.apikeys`) in constant time and turns the record into an
`Identity`. Pure; the edge policy authenticates with a store loaded from a mounted
Secret (cluster) or a local file (standalone)."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from pathlib import Path

from vocelio_contract.apikeys import KEY_PATTERN, ApiKeyRecord, hash_key, load_records
from vocelio_proxy.policy.auth.identity import AuthError, Identity

_DUMMY_HASH = hashlib.sha256(b"vocelio-no-such-key").hexdigest()


class ApiKeyStore:
    def __init__(self, records: list[ApiKeyRecord]) -> None:
        self._by_id = {r.id: r for r in records}

    def __len__(self) -> int:
        return len(self._by_id)

    def authenticate(self, presented: str, ip: str, now: dt.datetime) -> Identity:
        match = KEY_PATTERN.match(presented)
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


def load_store(path: Path) -> ApiKeyStore:
    return ApiKeyStore(load_records(path.read_bytes()))
