"""A reconciler that rejoins: how a replica starts afresh when kopf lists again (after
a peering pause it may not have heard of), stands down when a live peer outranks it
although no event said so, and leaves out of its render an object kopf's index still
holds after the object was deleted while no watch ran. Runs the real reconciler and
API writer against the real API server, with real VocelioServices; kopf's indexes are
plain dicts the test fills as kopf would (kopf keeps an entry it never saw deleted)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from kubernetes_asyncio import client

from tests.harness.controlplane import ControlPlane
from tests.harness.kube import Kube
from tests.harness.stack import install_crds
from tests.harness.waiting import poll_async
from vocelio_operator.kube.credentials import load_configuration
from vocelio_operator.kube.metrics import OperatorMetrics
from vocelio_operator.kube.peering import outranked
from vocelio_operator.kube.reconciler import Indexes, Reconciler
from vocelio_operator.kube.writer import HASH_ANNOTATION, ApiWriter
from vocelio_operator.settings import OperatorSettings
from vocelio_operator.translation.indexing import IndexedResource, resource_entry
from vocelio_operator.translation.tenancy.policy import key_namespaces

CONFIG = "rejoin-config"


@dataclass
class Rig:
    kube: Kube
    namespace: str
    reconciler: Reconciler
    #: What kopf's VocelioService index holds.
    resources: dict[str, list[IndexedResource]]

    def config_path(self) -> str:
        return f"/api/v1/namespaces/{self.namespace}/configmaps/{CONFIG}"

    async def config(self) -> dict[str, Any]:
        return dict(await asyncio.to_thread(self.kube.get, self.config_path()))

    async def services(self) -> set[str]:
        cm = await self.config()
        return {s["name"] for s in json.loads(cm["data"]["gateway.json"])["services"]}

    def create(self, name: str) -> dict[str, Any]:
        body = self.kube.create(f"/apis/gateway.vocelio.ai/v1alpha1/namespaces/{self.namespace}/vocelioservices", {
            "apiVersion": "gateway.vocelio.ai/v1alpha1", "kind": "VocelioService",
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": {"pathPrefix": f"/api/v1/{name}", "backends": [{"serviceRef": {"name": name, "port": 80}}]}})
        return dict(body)

    def index(self, body: dict[str, Any]) -> None:
        """kopf indexes the object (and keeps it until it sees the object's DELETED event)."""
        for key, entry in resource_entry(body).items():
            self.resources.setdefault(key, []).append(entry)


async def holds(check: bool) -> bool:
    return check


@contextlib.asynccontextmanager
async def rig(control_plane: ControlPlane, kube: Kube, namespace: str, monkeypatch: pytest.MonkeyPatch,
              peering: str | None = None, sweep_s: float = 0) -> AsyncIterator[Rig]:
    install_crds(control_plane, kube)
    monkeypatch.setenv("KUBECONFIG", str(control_plane.kubeconfig))
    settings = OperatorSettings(config_namespace=namespace, config_name=CONFIG, api_keys_secret="rejoin-keys",
                                coalesce_s=0, index_sweep_s=sweep_s)
    resources: dict[str, list[IndexedResource]] = {}
    async with client.ApiClient(await load_configuration()) as api:
        writer = ApiWriter(api)

        async def settled() -> None:
            return None

        async def outranked_now() -> bool:
            assert peering is not None
            status = await writer.peering_status("clusterkopfpeerings", None, peering)
            return outranked(status, 0, dt.datetime.now(dt.UTC))

        reconciler = Reconciler(settings, writer, OperatorMetrics(), Indexes(resources, {}, {}), settled,
                                outranked_now if peering else None)
        for key_namespace in key_namespaces(settings.tenancy, settings.config_namespace):
            reconciler.keys_listed(key_namespace)
        task = asyncio.create_task(reconciler.run())
        try:
            yield Rig(kube, namespace, reconciler, resources)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_a_replica_paused_without_hearing_of_it_rewrites_what_another_wrote_when_kopf_lists_again(
        control_plane: ControlPlane, kube: Kube, namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    async with rig(control_plane, kube, namespace, monkeypatch) as r:
        r.index(r.create("kept"))
        r.reconciler.activate()
        await poll_async("the first render", lambda: holds(r.reconciler.last_hash is not None), 20)
        ours = r.reconciler.last_hash
        # Another replica wrote while this one was paused; kopf stopped the watch that carried the pause
        # before this replica heard of it, so it still believes itself active.
        await asyncio.to_thread(kube.merge_patch, r.config_path(), {
            "metadata": {"annotations": {HASH_ANNOTATION: "another-replica"}},
            "data": {"gateway.json": json.dumps({"services": []})}})
        assert r.reconciler.active
        # kopf resumes and lists the peering object again: the replica re-reads and rewrites.
        r.reconciler.activate(relisted=True)

        async def ours_again() -> bool:
            return bool((await r.config())["metadata"]["annotations"].get(HASH_ANNOTATION) == ours)

        await poll_async("the replica rewrites its config", ours_again, 20)
        assert await r.services() == {"kept"}


async def test_a_replica_outranked_by_a_live_peer_writes_nothing_though_no_event_paused_it(
        control_plane: ControlPlane, kube: Kube, namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    peering = f"rejoin-{uuid.uuid4().hex[:8]}"
    kube.create("/apis/kopf.dev/v1/clusterkopfpeerings", {
        "apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": peering}})
    try:
        async with rig(control_plane, kube, namespace, monkeypatch, peering=peering) as r:
            r.index(r.create("first"))
            r.reconciler.activate()
            await poll_async("the first render", lambda: holds(r.reconciler.last_hash is not None), 20)
            # A peer with a higher priority is alive; the event that would have paused this replica was lost.
            now = dt.datetime.now(dt.UTC).isoformat()
            await asyncio.to_thread(kube.merge_patch, f"/apis/kopf.dev/v1/clusterkopfpeerings/{peering}", {
                "status": {"peer-with-priority": {"priority": 100, "lifetime": 60, "lastseen": now}}})
            # A change arrives (an API-key Secret: its watch is not kopf's, so it is never paused).
            r.index(r.create("second"))
            r.reconciler.mark_dirty()
            await poll_async("the replica stands down", lambda: holds(not r.reconciler.active), 20)
            assert await r.services() == {"first"}, "an outranked replica wrote"
    finally:
        kube.delete(f"/apis/kopf.dev/v1/clusterkopfpeerings/{peering}")


@pytest.mark.timeout(120)
async def test_an_object_deleted_while_no_watch_ran_leaves_the_render_within_the_sweep_period(
        control_plane: ControlPlane, kube: Kube, namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    sweep_s = 2.0
    async with rig(control_plane, kube, namespace, monkeypatch, sweep_s=sweep_s) as r:
        r.index(r.create("kept"))
        r.reconciler.activate()
        await poll_async("the first render", lambda: holds(r.reconciler.last_hash is not None), 20)
        ghost = r.create("ghost")
        r.index(ghost)
        r.reconciler.mark_dirty()

        async def rendered() -> bool:
            return "ghost" in await r.services()

        await poll_async("the new route rendered", rendered, 20)
        # Deleted while kopf's watch was down: kopf re-lists but keeps the object in its index, and
        # no event wakes the reconciler. The periodic check leaves it out within the sweep period.
        await asyncio.to_thread(kube.delete, f"/apis/gateway.vocelio.ai/v1alpha1/namespaces/{namespace}"
                                             f"/vocelioservices/ghost")
        loop = asyncio.get_running_loop()
        deleted_at = loop.time()

        async def left_out() -> bool:
            return await r.services() == {"kept"}

        await poll_async("the deleted route left out", left_out, 30)
        # Within the period (and the pass that follows it), not at some later unrelated event.
        assert loop.time() - deleted_at < sweep_s + 5
