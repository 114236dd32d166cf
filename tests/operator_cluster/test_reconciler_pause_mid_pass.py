"""A replica paused in the middle of a reconcile pass writes nothing after the pause: the
pass stops before its next write and resumes (re-reading what is written) only once the
replica is active again. Runs the real reconciler and API writer against the real API
server; the one seam is a writer that pauses its replica right after its first write,
the moment another replica would take over."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from kubernetes_asyncio import client

from tests.harness.controlplane import ControlPlane
from tests.harness.kube import Kube, KubeError
from tests.harness.waiting import poll_async
from vocelio_operator.kube.credentials import load_configuration
from vocelio_operator.kube.metrics import OperatorMetrics
from vocelio_operator.kube.reconciler import Indexes, Reconciler
from vocelio_operator.kube.writer import ApiWriter
from vocelio_operator.settings import OperatorSettings
from vocelio_operator.translation.tenancy.policy import key_namespaces


class PausedAfterFirstWrite(ApiWriter):
    """The real writer; after its first write it pauses the replica it writes for."""

    reconciler: Reconciler | None = None
    paused = False

    async def apply_secret(self, namespace: str, name: str, data: dict[str, str], digest: str) -> bool:
        written = await super().apply_secret(namespace, name, data, digest)
        assert self.reconciler is not None
        if not self.paused:
            self.paused = True
            self.reconciler.deactivate()
        return written


def exists(kube: Kube, path: str) -> bool:
    try:
        kube.get(path)
    except KubeError as exc:
        if exc.status == 404:
            return False
        raise
    return True


async def present(kube: Kube, path: str) -> bool:
    return await asyncio.to_thread(exists, kube, path)


async def state(check: bool) -> bool:
    return check


async def test_a_replica_paused_mid_pass_writes_nothing_more_until_it_is_active_again(
        control_plane: ControlPlane, kube: Kube, namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(control_plane.kubeconfig))
    settings = OperatorSettings(config_namespace=namespace, config_name="paused-config",
                                api_keys_secret="paused-keys", coalesce_s=0)
    config_map = f"/api/v1/namespaces/{namespace}/configmaps/paused-config"
    secret = f"/api/v1/namespaces/{namespace}/secrets/paused-keys"
    async with client.ApiClient(await load_configuration()) as api:
        writer = PausedAfterFirstWrite(api)

        async def settled() -> None:
            return None

        reconciler = Reconciler(settings, writer, OperatorMetrics(), Indexes({}, {}, {}), settled)
        writer.reconciler = reconciler
        for key_namespace in key_namespaces(settings.tenancy, settings.config_namespace):
            reconciler.keys_listed(key_namespace)
        task = asyncio.create_task(reconciler.run())
        try:
            reconciler.activate()
            # Keys are written first; the pause lands right after, before the routes.
            await poll_async("the key Secret written", lambda: present(kube, secret), 20)
            await poll_async("the pass stopped by the pause",
                             lambda: state(reconciler.passes >= 1 and not reconciler.active), 20)
            # The pass raised before its next write, so nothing is left to write the routes later.
            assert not await present(kube, config_map), "a paused replica wrote the routes"
            assert reconciler.last_hash is None

            reconciler.activate()  # active again: the rest of the pass is written
            await poll_async("the config written once active again", lambda: present(kube, config_map), 20)
            assert reconciler.last_hash is not None
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
