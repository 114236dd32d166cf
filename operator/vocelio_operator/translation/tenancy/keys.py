"""Which API-key records the operator publishes to the proxies. Pure; the
reconciler calls `judge_keys` on every pass with the index's records and posts
each refusal as an Event on its Secret.

Three rules: a key outside its namespace's allowance (`allowances.KeyPolicy`) is
not published; a key id is published once: a record whose id another
Secret already publishes would replace that key in every proxy (the proxies
look keys up by id), so the gateway namespace's record wins, then the first
Secret by namespace and name; the others are refused; and the published keys fit
the keys Secret (`KEYS_BUDGET_BYTES`), in that same order, so tenants filling it
never stop the write (and with it every render)."""

from __future__ import annotations

import json
from collections.abc import Mapping

from vocelio_contract.apikeys import ApiKeyRecord
from vocelio_operator.translation.tenancy.allowances import KeyPolicy

#: What the published keys may take of the keys Secret (the API server refuses a Secret over 1 MiB;
#: a write it refuses would stop every render, routes included, since keys are written first).
KEYS_BUDGET_BYTES = 768 * 1024


def record_bytes(record: ApiKeyRecord) -> int:
    """What one record adds to the proxies' keys document (`ClusterIndex.api_keys_document`)."""
    # As an element of the document's list (its indentation), with the separator to the next one.
    return len(json.dumps([record.model_dump(mode="json")], sort_keys=True, indent=1).encode()) - 2


def judge_keys(records: Mapping[str, ApiKeyRecord], policy: KeyPolicy, gateway_namespace: str,
               budget_bytes: int = KEYS_BUDGET_BYTES) -> dict[str, str]:
    """"namespace/name" -> why that Secret's key is not published, for each refused one."""
    refused: dict[str, str] = {}
    owner: dict[str, str] = {}
    used = 5  # the list's brackets and the final newline
    # The gateway's namespace first: an admin's key id can never be shadowed by a tenant's.
    for key in sorted(records, key=lambda k: (k.split("/", 1)[0] != gateway_namespace, k)):
        record = records[key]
        namespace = key.split("/", 1)[0]
        why = policy.refusal(namespace, record)
        if why is None and record.id in owner:
            why = f"API key {record.id} not published: Secret {owner[record.id]} already publishes that key id"
        size = record_bytes(record)
        if why is None and used + size > budget_bytes:
            # In the same order as above: the gateway's own keys first, so tenants filling the
            # Secret never push the platform's keys out.
            why = (f"API key {record.id} not published: the published keys would exceed the keys Secret's "
                   f"budget of {budget_bytes} bytes")
        if why is not None:
            refused[key] = why
            continue
        used += size
        owner[record.id] = key
    return refused
