"""The reconcile loop: coalesces bursts of watch events into one pass that
renders the full config (pure) from kopf's indexes, writes the ConfigMap(s) only
when the hash changed, and patches each resource's status only when it changed,
posting Events on transitions. It renders only while its replica is active:
`activate` (kopf released its handlers, so the indexes are filled, and this
replica holds the peering) re-reads what is written, then renders; `deactivate`
(a live peer with a higher priority) stops it before its next write.

kopf stops the peering watch that carries `deactivate` at the moment it pauses,
so a replica can be paused without hearing of it: each pass first asks whether a
live peer outranks this replica (one GET of the peering object), and every fresh
listing of the peering object (kopf lists again after each pause) activates anew.
kopf's indexes keep objects deleted while kopf was not watching (a re-list does
not drop them): on each activation, and every `index_sweep_s` while active, the
indexes are checked against a fresh listing and such objects are left out of the
render. Owned by
the kopf startup handler (a task it cancels on cleanup); woken by the event
handlers; API-key Secrets arrive from `keywatch` (the first render waits for
each key namespace's first listing, so keys are published before routes)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from vocelio_contract.sharding import shard_config
from vocelio_operator.kube.metrics import OperatorMetrics
from vocelio_operator.kube.writer import ApiWriter
from vocelio_operator.settings import OperatorSettings
from vocelio_operator.translation.cluster_index import ClusterIndex, ResourceRef
from vocelio_operator.translation.indexing import IndexedResource, IndexedSlice, ServiceKey, indexed_uids, refresh
from vocelio_operator.translation.rendering import Outcome, render_config
from vocelio_operator.translation.status import (
    resource_status,
    same_conditions,
    transition_events,
)
from vocelio_operator.translation.tenancy.grants import ReferenceGrant
from vocelio_operator.translation.tenancy.keys import judge_keys
from vocelio_operator.translation.tenancy.policy import address_policy, key_namespaces, key_policy, tenancy_policy

log = logging.getLogger("vocelio.operator")

_BACKOFF_S = (0.5, 1, 2, 5, 10)


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Paused(Exception):
    """The replica was paused during a pass: the pass stops before its next write."""


@dataclass(frozen=True)
class Indexes:
    """kopf's indexes the reconciler renders from (each maps a key to the values of every
    object under it; kopf fills them before it runs any other handler)."""

    resources: Mapping[str, Iterable[IndexedResource]]
    slices: Mapping[ServiceKey, Iterable[IndexedSlice]]
    grants: Mapping[str, Iterable[ReferenceGrant]]


class Reconciler:
    def __init__(self, settings: OperatorSettings, writer: ApiWriter, metrics: OperatorMetrics,
                 indexes: Indexes, settle: Callable[[], Awaitable[None]],
                 outranked: Callable[[], Awaitable[bool]] | None = None) -> None:
        self.settings = settings
        #: Whether a live peer outranks this replica now (None: a replica with no peers).
        self._outranked = outranked
        #: Waits until kopf finished indexing a listing (before the first render of an activation).
        self._settle = settle
        self.writer = writer
        self.metrics = metrics
        self.indexes = indexes
        #: The view of the last render (refreshed from `indexes` before each pass; API keys
        #: are kept current by `keywatch`).
        self.index = ClusterIndex()
        self._dirty = asyncio.Event()
        self._active = asyncio.Event()
        #: Set by `activate`: read what is written before the next write.
        self._reread = False
        #: uids of objects kopf's indexes still hold that a fresh listing no longer has.
        self._gone: frozenset[str] = frozenset()
        #: Set by `activate` and by the timer: check the indexes against a fresh listing before the pass.
        self._sweep_due = False
        self._swept_at = time.monotonic()
        #: Key namespaces whose first listing has not arrived yet.
        self._keys_pending = set(key_namespaces(settings.tenancy, settings.config_namespace))
        self._keys_listed = asyncio.Event()
        if not self._keys_pending:
            self._keys_listed.set()
        self.last_hash: str | None = None
        self.last_keys_digest: str | None = None
        self._reported: dict[str, dict[str, Any]] = {}
        #: "namespace/name" of an API-key Secret -> the refusal last posted as an Event about it.
        self._key_refusals: dict[str, str] = {}
        #: One address policy for the operator's life: its verdict memo spares re-parsing every endpoint.
        self._addresses = address_policy(settings.tenancy)
        self.passes = 0

    def mark_dirty(self) -> None:
        self._dirty.set()

    def keys_listed(self, namespace: str) -> None:
        """`keywatch` listed the key Secrets of `namespace` (the first time, or again)."""
        self._keys_pending.discard(namespace)
        if not self._keys_pending:
            self._keys_listed.set()

    @property
    def active(self) -> bool:
        return self._active.is_set()

    def activate(self, relisted: bool = False) -> None:
        """This replica holds the peering and kopf's indexes are filled: read what is
        written (another replica may have written since this one last did), check the
        indexes against a fresh listing, and render. `relisted`: kopf listed the peering
        object again, as it does after every pause; this replica may have been paused
        without hearing of it, so it starts afresh even if it believes itself active."""
        if relisted or not self._active.is_set():
            log.info("reconciler active: re-reading the written config")
            self._reread = self._sweep_due = True
            self._active.set()
            self._dirty.set()

    def deactivate(self) -> None:
        """Another replica holds the peering: write nothing until `activate`."""
        if self._active.is_set():
            log.info("reconciler paused: another replica is active")
            self._active.clear()

    def _writing(self) -> None:
        """Every write goes through here: a replica paused mid-pass stops before it."""
        if not self.active:
            raise _Paused

    async def _reread_written(self) -> None:
        self.last_hash = await self.writer.current_config_hash(self.settings.config_namespace,
                                                               self.settings.config_name)
        # The key Secret is compared with the written one on the next pass.
        self.last_keys_digest = None
        # Statuses are compared with what the indexes hold (the other replica may have patched them).
        self._reported.clear()
        self._reread = False

    async def _sweep(self) -> None:
        """Leave out of the render what kopf's indexes hold but the cluster no longer has.
        The uids are taken before listing, so an object indexed after its kind was listed
        is never taken for a deleted one (uids are never reused)."""
        held = indexed_uids(self.indexes.resources, self.indexes.slices, self.indexes.grants)
        gone: set[str] = set()
        for kind, by_namespace in sorted(held.items()):
            scopes: list[str | None] = [*sorted(by_namespace)] if self.settings.namespaces else [None]
            live: set[str] = set()
            for scope in scopes:
                live |= await self.writer.live_uids(kind, scope)
            gone |= {uid for uids in by_namespace.values() for uid in uids} - live
        if gone != self._gone:
            log.info("indexes checked against the cluster: objects deleted while kopf was not watching are "
                     "left out", extra={"fields": {"deleted_unseen": len(gone)}})
        self._gone = frozenset(gone)
        self._sweep_due = False
        self._swept_at = time.monotonic()

    async def _wake(self) -> None:
        """Return once something changed, or the periodic check of the indexes is due."""
        period = self.settings.index_sweep_s
        while not self._dirty.is_set():
            if not period:
                await self._dirty.wait()
                return
            left = self._swept_at + period - time.monotonic()
            if left <= 0:
                self._sweep_due = True
                self._dirty.set()
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), left)

    async def run(self) -> None:
        failures = 0
        await self._keys_listed.wait()
        while True:
            await self._wake()
            await self._active.wait()
            # Let a burst of events (a rollout, a bulk apply) land before rendering once.
            await asyncio.sleep(self.settings.coalesce_s)
            self._dirty.clear()
            if not self.active:
                self._dirty.set()  # paused while coalescing: render once active again
                continue
            try:
                if self._outranked is not None and await self._outranked():
                    # kopf paused this replica and stopped the watch that would have said so.
                    self.deactivate()
                    self._dirty.set()
                    continue
                if self._reread:
                    await self._settle()
                    await self._reread_written()
                if self._sweep_due:
                    await self._sweep()
                await self.reconcile_once()
                failures = 0
                self.metrics.reconciles.labels("ok").inc()
            except asyncio.CancelledError:
                raise
            except _Paused:
                self._dirty.set()  # the rest of the pass is the active replica's, or ours once active again
            except Exception:
                self.metrics.reconciles.labels("error").inc()
                log.exception("reconcile failed; retrying")
                self._dirty.set()
                await asyncio.sleep(_BACKOFF_S[min(failures, len(_BACKOFF_S) - 1)])
                failures += 1

    async def reconcile_once(self) -> None:
        self.passes += 1
        refresh(self.index, self.indexes.resources, self.indexes.slices, grants=self.indexes.grants, gone=self._gone)
        started = time.perf_counter()
        endpoints = self.index.endpoint_index()
        gateway = self.settings.config_namespace
        tenancy = tenancy_policy(self.settings.tenancy, gateway, self.index.grants_by_namespace(), self._addresses,
                                 [ep.address for (ns, _), eps in endpoints.items() if ns == gateway for ep in eps])
        result = render_config(list(self.index.services.values()), list(self.index.tiers.values()),
                               endpoints, tenancy=tenancy)
        self.metrics.render_duration.observe(time.perf_counter() - started)
        text = result.text  # the config's bytes, never parsed back here
        self.metrics.config_bytes.set(len(text.encode()))
        self.metrics.endpoints_tracked.set(self.index.endpoints_tracked())
        rendered_at = time.perf_counter()
        # Keys before routes: a proxy that reads a config naming a key-authenticated route finds the keys
        # already published, so a new route never answers 401 for a key that exists.
        refused = judge_keys(self.index.api_keys, key_policy(self.settings.tenancy, self.settings.config_namespace),
                             self.settings.config_namespace)
        keys_text, keys_digest = self.index.api_keys_document(refused)
        if keys_digest != self.last_keys_digest:
            self._writing()
            await self.writer.apply_secret(self.settings.config_namespace, self.settings.api_keys_secret,
                                           {"keys.json": keys_text}, keys_digest)
            self.last_keys_digest = keys_digest
        if result.hash != self.last_hash:
            shards = shard_config(text, result.hash, self.settings.config_name, self.settings.shard_bytes)
            self._writing()
            written = await self.writer.apply_configmaps(self.settings.config_namespace, shards, result.hash,
                                                         self.settings.config_name)
            self.metrics.config_writes.inc(written)
            self.metrics.last_write.set(time.time())
            self.last_hash = result.hash
            log.info("config written", extra={"fields": {
                "version": result.version, "bytes": len(text), "configmaps": len(shards),
                "services": result.services, "render_ms": round((rendered_at - started) * 1000, 1),
                "write_ms": round((time.perf_counter() - rendered_at) * 1000, 1)}})
        await self._report(result.outcomes)
        await self._report_keys({**self.index.api_key_problems, **refused})

    async def _report_keys(self, refused: dict[str, str]) -> None:
        """An Event on each API-key Secret whose key is not published, once per reason."""
        for key in [k for k in self._key_refusals if k not in refused]:
            del self._key_refusals[key]
        for key, message in sorted(refused.items()):
            if self._key_refusals.get(key) == message:
                continue
            namespace, name = key.split("/", 1)
            reason = "InvalidApiKey" if key in self.index.api_key_problems else "ApiKeyNotAllowed"
            self._writing()
            await self.writer.post_secret_event(namespace, name, self.index.api_key_uids.get(key, ""), "Warning",
                                                reason, message)
            self._key_refusals[key] = message

    async def _report(self, outcomes: dict[str, Outcome]) -> None:
        for key, ref in list(self.index.refs.items()):
            previous = self._reported.get(key, {}).get("conditions") or list(ref.conditions)
            body = resource_status(ref.kind, ref.namespace, ref.name, ref.generation, outcomes.get(key),
                                   self.index.invalid.get(key), previous, _now())
            if body is None:
                continue
            conditions = body["conditions"]
            if self._unchanged(key, ref, body):
                continue
            self._writing()
            await self.writer.patch_status(ref, body)
            self.metrics.status_patches.inc()
            for event_type, reason, message in transition_events(previous, conditions):
                await self.writer.post_event(ref, event_type, reason, message)
            self._reported[key] = body

    def _unchanged(self, key: str, ref: ResourceRef, body: dict[str, Any]) -> bool:
        before = self._reported.get(key) or ref.status
        if not before:
            return False
        plain = {k: v for k, v in body.items() if k != "conditions"}
        old_plain = {k: v for k, v in before.items() if k != "conditions"}
        return plain == old_plain and same_conditions(before.get("conditions") or [], body["conditions"])

    def forget(self, key: str) -> None:
        self._reported.pop(key, None)
