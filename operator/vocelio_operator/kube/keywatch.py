"""Watches API-key Secrets in an explicit list of namespaces (the gateway's own
plus `tenancy.apiKeys.namespaces`), one task per namespace, so the operator
needs Secret read rights only there (a namespaced Role each) instead of a
cluster-wide watch. Feeds the reconciler's index; owned by the kopf startup
handler, which cancels the tasks on cleanup.

Each task lists (replacing what the index held for its namespace), then
watches from the listing's resourceVersion; an expired version (410) or any
error relists after a bounded backoff. Secret contents are never logged."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

log = logging.getLogger("vocelio.operator.keys")

_BACKOFF_S = (0.5, 1, 2, 5, 10, 30)
_WATCH_TIMEOUT_S = 240

Listing = Callable[[str, list[Mapping[str, Any]]], None]
Change = Callable[[str, Mapping[str, Any]], None]


class _Expired(Exception):
    """The watch's resourceVersion is gone: list again."""


async def watch_key_secrets(api: client.ApiClient, namespace: str, label: str, on_listing: Listing,
                            on_change: Change) -> None:
    """Run until cancelled: keep the index's view of `namespace`'s key Secrets current."""
    core = client.CoreV1Api(api)
    selector = f"{label}=true"
    failures = 0
    while True:
        try:
            listed = await core.list_namespaced_secret(namespace, label_selector=selector)
            on_listing(namespace, api.sanitize_for_serialization(listed)["items"])
            version = listed.metadata.resource_version
            failures = 0
            while True:
                version = await _watch_once(core, namespace, selector, version, on_change)
        except asyncio.CancelledError:
            raise
        except _Expired:
            continue
        except ApiException as exc:
            # 403: the Role for this namespace is missing; say so, never the response body.
            log.warning("cannot read API-key Secrets", extra={"fields": {"namespace": namespace,
                                                                         "status": exc.status}})
        except Exception as exc:
            log.warning("API-key Secret watch failed", extra={"fields": {"namespace": namespace,
                                                                         "error": type(exc).__name__}})
        await asyncio.sleep(_BACKOFF_S[min(failures, len(_BACKOFF_S) - 1)])
        failures += 1


async def _watch_once(core: client.CoreV1Api, namespace: str, selector: str, version: str,
                      on_change: Change) -> str:
    """One watch request from `version` until the server ends it; returns the last version seen."""
    # Unparsed (`_preload_content=False`): the aiohttp response, read one event line at a time.
    resp: Any = await core.list_namespaced_secret(namespace, label_selector=selector, watch=True,
                                             resource_version=version, allow_watch_bookmarks=True,
                                             timeout_seconds=_WATCH_TIMEOUT_S, _preload_content=False)
    try:
        # kubernetes_asyncio reads with a 2 MiB buffer, so a line holds any Secret event (at most 1 MiB of data).
        while line := await resp.content.readline():
            event = json.loads(line)
            kind, body = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                if body.get("code") == 410:
                    raise _Expired()
                raise RuntimeError(f"watch error {body.get('code')}")
            version = (body.get("metadata") or {}).get("resourceVersion") or version
            if kind in ("ADDED", "MODIFIED", "DELETED"):
                on_change(str(kind), body)
    finally:
        resp.release()
    return version
