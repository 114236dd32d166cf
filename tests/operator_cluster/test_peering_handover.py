"""Two operator replicas under one kopf peering, on the real control plane: the
replica with the higher priority writes; the paused one writes nothing, not even a
reconcile pass; when the active replica goes away, the paused one resumes, re-reads
the ConfigMap the other wrote and therefore rewrites nothing, and then renders the
next change itself."""

from __future__ import annotations

import json
import os
import re
import signal
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.harness.controlplane import ControlPlane, free_port
from tests.harness.kube import Kube, KubeError
from tests.harness.stack import (
    BIN,
    CONFIG_NAME,
    CONFIG_NAMESPACE,
    Process,
    http_json,
    install_crds,
    poll,
    start_process,
)

NS = "team-handover"


def service(name: str) -> str:
    # A Service with no EndpointSlices: rendered (without endpoints) whatever the address policy.
    return f"""apiVersion: gateway.vocelio.ai/v1alpha1
kind: VocelioService
metadata: {{name: {name}, namespace: {NS}}}
spec:
  pathPrefix: /api/v1/{name}
  backends: [{{serviceRef: {{name: {name}, port: 80}}}}]
"""


def start_operator(cp: ControlPlane, name: str, extra: list[str] | None = None,
                   env: dict[str, str] | None = None) -> tuple[Process, int]:
    liveness, metrics = free_port(), free_port()
    proc = start_process(cp, name, [str(BIN / "vocelio-gateway"), "operator", "--config-namespace", CONFIG_NAMESPACE,
                                    "--liveness-port", str(liveness), "--metrics-port", str(metrics), *(extra or [])],
                         env=env)
    poll("operator liveness", lambda: http_json(f"http://127.0.0.1:{liveness}/healthz")[0] == 200, 60)
    return proc, metrics


def metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    match = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.M)
    assert match, f"{name} not exposed"
    return float(match.group(1))


@dataclass
class Replica:
    proc: Process
    metrics: int

    def writes(self) -> float:
        return metric(self.metrics, "vocelio_operator_config_writes_total")

    def passes(self) -> float:
        return metric(self.metrics, 'vocelio_operator_reconciles_total{result="ok"}')

    def said(self, line: str) -> int:
        return self.proc.said(line)


PAUSING = "Pausing operations in favour of"
RESUMING = "Resuming operations after the pause"


def outranked(cp: ControlPlane, first: Replica, name: str, priority: int,
              env: dict[str, str] | None = None) -> tuple[Process, int, int]:
    """Start a peer with a higher `priority` and wait until `first` pauses for it: the peer's
    process, its metrics port, and how often `first` had resumed before (to count the next)."""
    pauses, resumes = first.said(PAUSING), first.said(RESUMING)
    proc, port = start_operator(cp, name, ["--priority", str(priority)], env=env)
    try:
        poll("the first replica pauses", lambda: first.said(PAUSING) > pauses, 60)
    except BaseException:
        proc.stop()
        raise
    return proc, port, resumes


@pytest.fixture(scope="module")
def first(control_plane: ControlPlane, kube: Kube) -> Iterator[Replica]:
    install_crds(control_plane, kube)
    try:
        kube.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    except KubeError as exc:
        if exc.status != 409:
            raise
    proc, port = start_operator(control_plane, "operator-handover-1")
    try:
        yield Replica(proc, port)
    finally:
        proc.stop()


def services(kube: Kube) -> set[str]:
    cm = kube.get(f"/api/v1/namespaces/{CONFIG_NAMESPACE}/configmaps/{CONFIG_NAME}")
    return {s["name"] for s in json.loads(cm["data"]["gateway.json"])["services"]}


def test_only_the_active_replica_writes_and_the_resumed_one_rereads_before_writing(
        control_plane: ControlPlane, kube: Kube, first: Replica) -> None:
    control_plane.kubectl("apply", "-f", "-", input=service("before"))
    poll("the first replica renders", lambda: "before" in services(kube), 60)

    proc, port, resumes = outranked(control_plane, first, "operator-handover-2", 10)
    second = Replica(proc, port)
    try:
        paused_writes, paused_passes = first.writes(), first.passes()
        control_plane.kubectl("apply", "-f", "-", input=service("during"))
        poll("the active replica renders", lambda: "during" in services(kube), 60)
        poll("the active replica counted its write", lambda: second.writes() >= 1, 10)
        # The paused replica neither reconciled nor wrote while the other one did.
        assert (first.writes(), first.passes()) == (paused_writes, paused_passes)
    finally:
        second.proc.stop()

    poll("the first replica resumes", lambda: first.said(RESUMING) > resumes, 90)
    poll("the resumed replica renders again", lambda: first.passes() > paused_passes, 60)
    # It read the ConfigMap the other replica wrote: the same config is not written again.
    assert first.writes() == paused_writes
    assert {"before", "during"} <= services(kube)

    control_plane.kubectl("apply", "-f", "-", input=service("after"))
    poll("the resumed replica renders the next change", lambda: "after" in services(kube), 60)
    # The ConfigMap is visible before the writer's counter moves: wait for the counter, bounded.
    assert poll("the resumed replica counted its write", lambda: first.writes() > paused_writes, 10)


@pytest.mark.timeout(300)
def test_a_replica_that_resumes_rewrites_a_config_the_cluster_no_longer_holds(
        control_plane: ControlPlane, kube: Kube, first: Replica) -> None:
    """The active replica writes a route, then freezes (SIGSTOP) before it sees the route
    deleted. When its peering record expires, the paused replica resumes: its own last
    write equals what the cluster now holds, but the ConfigMap holds the frozen replica's
    newer write, so only a replica that re-reads the ConfigMap on activation removes the
    deleted route."""
    control_plane.kubectl("apply", "-f", "-", input=service("steady"))
    poll("the first replica renders", lambda: "steady" in services(kube), 60)
    proc, _, resumes = outranked(control_plane, first, "operator-handover-3", 20, env={
        # A short peering lifetime: the frozen replica's record expires within seconds.
        "VOCELIO_OPERATOR_PEERING_LIFETIME_S": "5"})
    try:
        control_plane.kubectl("apply", "-f", "-", input=service("short-lived"))
        poll("the active replica renders", lambda: "short-lived" in services(kube), 60)
        os.killpg(proc.proc.pid, signal.SIGSTOP)
        control_plane.kubectl("delete", "vocelioservice", "short-lived", "-n", NS)
        poll("the first replica resumes once the frozen one expires",
             lambda: first.said(RESUMING) > resumes, 200)
        poll("the resumed replica removes the deleted route", lambda: "short-lived" not in services(kube), 60)
        assert "steady" in services(kube)
    finally:
        os.killpg(proc.proc.pid, signal.SIGKILL)
        proc.proc.wait(timeout=10)


def test_a_route_deleted_while_a_replica_was_paused_is_not_rendered_again_when_it_resumes(
        control_plane: ControlPlane, kube: Kube, first: Replica) -> None:
    """The first replica indexes a route, pauses for a peer, and does not see the route
    deleted (kopf watches nothing while paused). On resuming, kopf re-lists, but a re-list
    does not remove what it no longer finds from kopf's indexes: the resumed replica checks
    its indexes against a fresh listing, so the deleted route is not written back."""
    control_plane.kubectl("apply", "-f", "-", input=service("doomed"))
    poll("the first replica renders", lambda: "doomed" in services(kube), 60)
    proc, port, resumes = outranked(control_plane, first, "operator-handover-4", 30)
    second = Replica(proc, port)
    try:
        paused_passes = first.passes()
        control_plane.kubectl("delete", "vocelioservice", "doomed", "-n", NS)
        poll("the active replica removes the route", lambda: "doomed" not in services(kube), 60)
    finally:
        second.proc.stop()
    poll("the first replica resumes", lambda: first.said(RESUMING) > resumes, 90)
    poll("the resumed replica renders again", lambda: first.passes() > paused_passes, 60)
    assert "doomed" not in services(kube), "the resumed replica wrote back a route deleted while it was paused"
