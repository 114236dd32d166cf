"""Which API-key records the operator publishes to the proxies. Pure; the
reconciler calls `judge_keys` on every pass with the index's records and posts
each refusal as an Event on its Secret.

Two rules: a key outside its namespace's allowance (`allowances.KeyPolicy`) is
not published, and a key id is published once: a record whose id another
Secret already publishes would replace that key in every proxy (the proxies
look keys up by id), so the gateway namespace's record wins, then the first
Secret by namespace and name; the others are refused."""

from __future__ import annotations

from collections.abc import Mapping

from vocelio_contract.apikeys import ApiKeyRecord
from vocelio_operator.translation.tenancy.allowances import KeyPolicy


def judge_keys(records: Mapping[str, ApiKeyRecord], policy: KeyPolicy, gateway_namespace: str) -> dict[str, str]:
    """"namespace/name" -> why that Secret's key is not published, for each refused one."""
    refused: dict[str, str] = {}
    owner: dict[str, str] = {}
    # The gateway's namespace first: an admin's key id can never be shadowed by a tenant's.
    for key in sorted(records, key=lambda k: (k.split("/", 1)[0] != gateway_namespace, k)):
        record = records[key]
        namespace = key.split("/", 1)[0]
        why = policy.refusal(namespace, record)
        if why is None and record.id in owner:
            why = f"API key {record.id} not published: Secret {owner[record.id]} already publishes that key id"
        if why is not None:
            refused[key] = why
            continue
        owner[record.id] = key
    return refused
