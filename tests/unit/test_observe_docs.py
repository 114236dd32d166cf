"""docs/operations/observability.md documents every metric the proxy and the
operator expose, with every label; `make help` lists every documented target."""

from __future__ import annotations

import subprocess

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.harness.controlplane import ROOT
from vocelio_operator.kube.metrics import OperatorMetrics
from vocelio_proxy.process.metrics import ProxyMetrics, code_label

DOC = ROOT / "docs" / "operations" / "observability.md"


def exposed() -> dict[str, set[str]]:
    proxy = ProxyMetrics(lambda: None)
    proxy.track_config_watchers(lambda: [], lambda: (0, 0))
    proxy.count_request("svc", "GET", code_label(200), 0.1)
    proxy.count_bytes("svc", 1, 1)
    proxy.ratelimit_decisions.inc(("tier", "allowed"))
    proxy.observe_upstream("svc", 0.1)
    for counter in (proxy.retries, proxy.upstream_errors):
        counter.labels("svc", "x").inc()
    proxy.auth_failures.labels("x").inc()
    for labelled in (proxy.tunnels, proxy.tunnel_idle_closes, proxy.upgrades_refused):
        labelled.labels("svc").inc()
    proxy.tunnels_open.labels("svc").set(1)
    proxy.config_reloads.labels("ok").inc()
    out: dict[str, set[str]] = {}
    for registry in (proxy.registry, OperatorMetrics().registry):
        for family in text_string_to_metric_families(generate_latest(registry).decode()):
            if family.name.endswith("_created"):
                continue
            name = family.name + ("_total" if family.type == "counter" else "")
            out[name] = {k for s in family.samples for k in s.labels} - {"le"}
    return out


def test_every_metric_and_label_is_documented() -> None:
    text = DOC.read_text()
    rows = {line.split("|")[1].strip().strip("`"): line for line in text.splitlines()
            if line.startswith("| `vocelio_")}
    for name, labels in exposed().items():
        assert name in rows, f"{name} is not documented in {DOC.name}"
        for label in labels:
            assert f"`{label}`" in rows[name], f"{name}: label {label} is not documented"


def test_make_help_lists_every_target_with_a_description() -> None:
    done = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    listed = {line.split()[0] for line in done.stdout.splitlines()[1:] if line.strip()}
    phony = next(line for line in (ROOT / "Makefile").read_text().splitlines() if line.startswith(".PHONY:"))
    assert set(phony.split()[1:]) <= listed
